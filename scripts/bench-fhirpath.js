// Runs the benchmark workload written by `cargo bench --bench fhirpath` through fhirpath.js (HL7's
// JavaScript FHIRPath engine) with its R4 model, and prints nanoseconds per evaluation.
// Usage: node scripts/bench-fhirpath.js WORKLOAD.json NODE_MODULES_DIR
const path = require('path');
const fs = require('fs');
const [workloadFile, modules] = process.argv.slice(2);
const fhirpath = require(path.join(modules, 'fhirpath'));
const r4 = require(path.join(modules, 'fhirpath', 'fhir-context', 'r4'));
const w = JSON.parse(fs.readFileSync(workloadFile, 'utf8'));

// trace() in the invariants would print; both engines get a silent trace.
const options = { traceFn: () => {} };

// fhirpath.js annotates the objects it walks, which makes later passes over the same objects
// cheaper; a server evaluates each resource once, so every pass gets fresh copies (made untimed).
function pass(compiled, resources) {
  let n = 0;
  for (const [ri, ei] of w.pairs) {
    const res = resources[ri];
    try {
      const out = compiled ? compiled[ei](res) : fhirpath.evaluate(res, w.expressions[ei], null, r4, options);
      n += out.length;
    } catch (e) {
      // An expression fhirpath.js rejects still costs its attempt; counted like ours.
    }
  }
  return n;
}

function timePerEval(minMs, fn) {
  fn(structuredClone(w.resources));
  let spent = 0n;
  let passes = 0;
  while (Number(spent) / 1e6 < minMs || passes < 3) {
    const fresh = structuredClone(w.resources);
    const start = process.hrtime.bigint();
    fn(fresh);
    spent += process.hrtime.bigint() - start;
    passes++;
  }
  return Number(spent) / (passes * w.pairs.length);
}

const compiled = w.expressions.map((e) => fhirpath.compile(e, r4, options));
const cached = timePerEval(3000, (r) => pass(compiled, r));
const uncached = timePerEval(3000, (r) => pass(null, r));
console.log(JSON.stringify({ cached_ns: cached, uncached_ns: uncached, evaluations: w.pairs.length }));
