/** `npm run docs` helper: writes docs/states.md, docs/metrics.md, docs/errors.md and docs/state-edges.txt from the table and the bounded simulation. */
import { writeFileSync } from 'node:fs';
import { renderStatesDoc } from '../../src/agent/states-doc.js';
import { renderMetricsDoc } from '../../src/agent/metrics.js';
import { renderErrorsDoc } from '../../src/errors/catalogue.js';
import { BOUNDED, explore, renderEdges } from './explore.js';

writeFileSync('docs/states.md', renderStatesDoc());
writeFileSync('docs/metrics.md', renderMetricsDoc());
writeFileSync('docs/errors.md', renderErrorsDoc());
const result = explore(BOUNDED.first, BOUNDED.schedules, BOUNDED.faultSteps);
if (result.failure) {
  console.error(result.failure.report);
  process.exit(1);
}
writeFileSync('docs/state-edges.txt', renderEdges(result.edges));
