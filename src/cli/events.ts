import { filterEvents, parseEvents, readEvents, renderEvent, type ClusterEvent } from '../cluster/events.js';
import type { ClusterHandle } from './context.js';

export interface EventsOptions {
  member?: string;
  json?: boolean;
  follow?: boolean;
  limit?: number;
}

/** `relevo events`: prints the event log; with --follow, keeps printing new events until interrupted. */
export async function showEvents(handle: ClusterHandle, options: EventsOptions, write: (line: string) => void = console.log): Promise<void> {
  const render = (e: ClusterEvent) => (options.json ? JSON.stringify(e) : renderEvent(e));
  const seen = new Set<string>();
  const print = (events: ClusterEvent[]) => {
    for (const e of events) {
      seen.add(e.id);
      write(render(e));
    }
  };
  const initial = filterEvents(await readEvents(handle.store, handle.keys.events), { member: options.member, limit: options.limit });
  if (!options.follow) {
    if (options.json) write(JSON.stringify(initial, null, 2));
    else if (initial.length === 0) write('no events recorded yet');
    else print(initial);
    return;
  }
  print(initial);
  await new Promise<never>((_resolve, reject) => {
    void handle.store
      .watch(
        handle.keys.events,
        (event) => {
          if (event.type === 'put' && event.key === handle.keys.events) print(filterEvents(parseEvents(event.value), { member: options.member, after: seen }));
        },
        reject,
      )
      .catch(reject);
  });
}
