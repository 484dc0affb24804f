// relevo dashboard: polls GET /cluster and GET /events once a second and redraws.
// Plain ES module, no build step. Text from the cluster is always set with
// textContent, never parsed as HTML.
const POLL_MS = 1000;
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} kB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  return `${(n / 1024 ** 3).toFixed(2)} GB`;
}

let tones = { states: {}, colours: {} };
const colourOf = (state) => tones.colours[tones.states[state] ?? 'waiting'] ?? '#888';

function stateBadge(state) {
  const span = el('span', { class: 'state', 'data-state': state }, state);
  span.style.background = colourOf(state);
  return span;
}

function table(headers, rows) {
  const t = el('table');
  const head = el('tr');
  for (const h of headers) head.append(el('th', {}, h));
  t.append(head);
  for (const r of rows) {
    const tr = el('tr');
    for (const c of r) {
      const td = el('td');
      if (c instanceof Node) td.append(c);
      else td.textContent = c;
      tr.append(td);
    }
    t.append(tr);
  }
  return t;
}

function drawTopology(view) {
  const svg = $('topology');
  svg.replaceChildren();
  const width = svg.clientWidth || 900;
  const members = view.members;
  const primary = members.find((m) => m.role === 'primary' && m.state === 'primary') ?? members.find((m) => m.name === view.leader?.member);
  const others = members.filter((m) => m !== primary);
  const box = { w: 190, h: 78 };
  const pos = new Map();
  if (primary) pos.set(primary.name, { x: width / 2 - box.w / 2, y: 12 });
  const rowY = primary ? 160 : 80;
  others.forEach((m, i) => pos.set(m.name, { x: ((i + 0.5) * width) / others.length - box.w / 2, y: rowY }));
  const defs = el('svg:defs');
  const marker = el('svg:marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
  marker.append(el('svg:path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#6b7480' }));
  defs.append(marker);
  svg.append(defs);
  const syncSet = new Set(view.sync?.members ?? []);
  for (const m of others) {
    const up = m.upstream && pos.get(m.upstream);
    const me = pos.get(m.name);
    if (!up || !me) continue;
    const line = el('svg:line', {
      x1: up.x + box.w / 2, y1: up.y + box.h, x2: me.x + box.w / 2, y2: me.y - 2,
      stroke: m.streaming ? '#6b7480' : '#c58a00', 'stroke-width': syncSet.has(m.name) ? 3 : 1.5,
      'stroke-dasharray': m.streaming ? '' : '6 4', 'marker-end': 'url(#arrow)', 'data-edge': `${m.upstream}->${m.name}`,
    });
    svg.append(line);
    const label = [m.streaming ? 'streams' : 'not streaming', syncSet.has(m.name) ? 'sync' : 'async'].join(' · ');
    svg.append(el('svg:text', { x: (up.x + me.x) / 2 + box.w / 2 + 6, y: (up.y + box.h + me.y) / 2, 'font-size': 11, fill: '#6b7480' }, label));
  }
  for (const m of members) {
    const p = pos.get(m.name);
    const g = el('svg:g', { 'data-member': m.name, 'data-state': m.state, 'data-role': m.role, transform: `translate(${p.x},${p.y})` });
    g.append(el('svg:rect', { width: box.w, height: box.h, rx: 6, fill: '#fff', stroke: colourOf(m.state), 'stroke-width': 3 }));
    g.append(el('svg:rect', { width: 8, height: box.h, rx: 3, fill: colourOf(m.state) }));
    g.append(el('svg:text', { x: 16, y: 20, 'font-weight': 600, 'font-size': 14 }, m.name));
    const lease = view.leader?.member === m.name;
    if (lease) g.append(el('svg:text', { x: box.w - 8, y: 20, 'text-anchor': 'end', 'font-size': 11, fill: '#1f9d55', 'data-lease': 'yes' }, '◆ leader lease'));
    g.append(el('svg:text', { x: 16, y: 39, 'font-size': 12 }, `${m.role} · ${m.state}`));
    g.append(el('svg:text', { x: 16, y: 56, 'font-size': 11, fill: '#6b7480' }, `TL ${m.timeline ?? '-'} · lag ${bytes(m.lagBytes)}${m.replayPaused ? ' · replay paused' : ''}`));
    g.append(el('svg:text', { x: 16, y: 71, 'font-size': 10, fill: '#6b7480' }, m.connectAddress));
    svg.append(g);
  }
  const legend = $('legend');
  legend.replaceChildren();
  for (const [tone, colour] of Object.entries(tones.colours)) {
    const item = el('span');
    const swatch = el('i');
    swatch.style.background = colour;
    item.append(swatch, tone);
    legend.append(item);
  }
  legend.append(el('span', {}, 'thick arrow: synchronous standby · dashed: not streaming'));
}

function drawLag(view) {
  const box = $('lag');
  box.replaceChildren();
  const samples = view.lagHistory;
  for (const m of view.members) {
    const points = samples.map((s) => [s.at, s.lag[m.name]]).filter(([, v]) => v !== null && v !== undefined);
    const row = el('div', { class: 'lag-row', 'data-member': m.name });
    row.append(el('span', {}, m.name));
    const svg = el('svg:svg', { viewBox: '0 0 300 36', preserveAspectRatio: 'none' });
    if (points.length > 1) {
      const t0 = points[0][0];
      const t1 = Math.max(points.at(-1)[0], t0 + 1);
      const max = Math.max(1024, ...points.map(([, v]) => v));
      const d = points.map(([t, v], i) => `${i ? 'L' : 'M'}${(((t - t0) / (t1 - t0)) * 300).toFixed(1)},${(34 - (v / max) * 32).toFixed(1)}`).join(' ');
      svg.append(el('svg:path', { d, fill: 'none', stroke: colourOf(m.state), 'stroke-width': 1.5, 'vector-effect': 'non-scaling-stroke' }));
      svg.append(el('svg:text', { x: 2, y: 10, 'font-size': 9, fill: '#6b7480' }, `max ${bytes(max)}`));
    }
    row.append(svg, el('span', {}, bytes(m.lagBytes)));
    box.append(row);
  }
}

function drawHistory(view) {
  const rows = [...view.history].reverse().map((h) => [String(h.timeline), h.at.replace('T', ' ').slice(0, 19), h.from ?? '-', h.to, h.lsn ?? '-', h.reason]);
  $('history').replaceChildren(rows.length ? table(['TL', 'At', 'From', 'To', 'Fork LSN', 'Reason'], rows) : el('p', { class: 'muted' }, 'no promotion yet: timeline 1'));
}

function drawRouters(view) {
  const rows = view.routers.flatMap((r) =>
    r.listeners.map((l) => [r.name, l.role === 'rw' ? 'read-write' : 'read-only', l.address, String(l.open), Object.entries(l.backends).map(([m, n]) => `${m}:${n}`).join(', ') || '-', String(l.held)]),
  );
  $('routers').replaceChildren(rows.length ? table(['Router', 'Listener', 'Address', 'Open', 'Per member', 'Held'], rows) : el('p', { class: 'muted' }, 'no router publishes its status'));
}

function drawEvents(events) {
  const list = $('events');
  list.replaceChildren();
  for (const e of [...events].reverse()) {
    const li = el('li', { 'data-member': e.member, 'data-to': e.to });
    li.append(el('span', { class: 'muted' }, `${e.at.replace('T', ' ').slice(0, 23)} `), el('span', { class: 'who' }, e.member), ' ');
    if (e.from !== e.to) li.append(stateBadge(e.from), ' → ');
    li.append(stateBadge(e.to));
    if (e.actions.length) li.append(el('span', { class: 'muted' }, ` [${e.actions.join(', ')}]`));
    li.append(` ${e.reason}`);
    if (e.outcome !== 'ok') li.append(el('span', { class: 'failed-outcome' }, ` (${e.outcome})`));
    list.append(li);
  }
}

function drawSummary(view) {
  $('cluster-name').textContent = view.cluster;
  const summary = $('summary');
  summary.replaceChildren(`leader: ${view.leader?.member ?? 'none'} · sync: ${view.sync?.members.join(', ') || 'none'} · ${view.members.length} members`);
  if (view.paused) summary.append(' ', el('span', { class: 'banner' }, 'PAUSED'));
  if (view.failover) summary.append(' ', el('span', { class: 'banner' }, `${view.failover.kind} in progress`));
  $('updated').textContent = `served by ${view.servedBy} · ${new Date(view.now).toLocaleTimeString()}`;
  const select = $('switch-to');
  const wanted = view.members.filter((m) => m.role === 'replica').map((m) => m.name);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (wanted.join() !== have.join()) {
    const chosen = select.value;
    select.replaceChildren(el('option', { value: '' }, 'best replica'), ...wanted.map((n) => el('option', { value: n }, n)));
    select.value = wanted.includes(chosen) ? chosen : '';
  }
}

async function getJson(path) {
  const response = await fetch(path, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  try {
    const [view, events] = await Promise.all([getJson('/cluster'), getJson('/events?limit=200').catch(() => [])]);
    tones = view.tones;
    drawSummary(view);
    drawTopology(view);
    drawLag(view);
    drawHistory(view);
    drawRouters(view);
    drawEvents(events);
    document.body.dataset.leader = view.leader?.member ?? '';
  } catch (error) {
    $('updated').textContent = `cannot reach this agent: ${error.message}`;
  }
}

async function operate(path, body) {
  const user = $('user').value;
  const password = $('password').value;
  const result = $('op-result');
  // Asked without credentials, the API answers 401 with a Basic challenge and the browser would pop up its own prompt.
  if (!user) {
    result.textContent = `${path}: authentication required: enter the API user and password (api.auth in the member file)`;
    return;
  }
  const headers = { 'content-type': 'application/json', authorization: `Basic ${btoa(`${user}:${password}`)}` };
  result.textContent = `${path}…`;
  try {
    const response = await fetch(path, { method: 'POST', headers, body: JSON.stringify(body ?? {}) });
    const answer = await response.json().catch(() => ({}));
    result.textContent = response.ok ? `${path}: accepted` : `${path}: ${answer.error ?? answer.message ?? `HTTP ${response.status}`}`;
  } catch (error) {
    result.textContent = `${path}: ${error.message}`;
  }
  void refresh();
}

$('switchover').addEventListener('click', () => operate('/switchover', $('switch-to').value ? { to: $('switch-to').value } : {}));
$('pause').addEventListener('click', () => operate('/pause'));
$('resume').addEventListener('click', () => operate('/resume'));
void refresh();
setInterval(refresh, POLL_MS);
