// Drives headless Chromium (Debian's, through puppeteer-core) against a running trailspark
// server, for pipeline/tests/browser.rs. The test pages are served from a second origin
// (`http://localhost:<port>`, the server being `http://127.0.0.1:<port>`), so every call
// is a cross-origin one, as from a real website.
//
//   node run.mjs '{"scenario": "analytics"|"snippet"|"consent"|"cors", "server": "http://127.0.0.1:P",
//                  "key": "sk_…", "run": "r1", "artifacts": "/dir",
//                  "pagePort": 0, "deniedKey": "sk_…" (cors only)}'
//
// Prints one JSON object: what the page reported and the requests it made to the server.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const here = path.dirname(fileURLToPath(import.meta.url));
/** What reached the server through the recording proxy, in order of answer. */
const arrivals = [];
const cfg = JSON.parse(process.argv[2]);
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';

/** Serves the test pages, and analytics-next's UMD build from node_modules under /ajs/. */
function pageServer() {
  const ajs = path.join(here, 'node_modules/@segment/analytics-next/dist/umd');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    let file;
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    if (url.pathname.startsWith('/ajs/')) {
      file = path.join(ajs, path.basename(url.pathname));
    } else if (url.pathname === '/consent') {
      // The shop page with consent required: nothing is sent before trailspark.consent(true).
      file = path.join(here, 'pages/shop.html');
    } else if (url.pathname === '/shop' || url.pathname.startsWith('/shop/')) {
      file = path.join(here, 'pages/shop.html');
    } else {
      file = path.join(here, 'pages', path.basename(url.pathname));
    }
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404).end('not found');
        return;
      }
      const type = file.endsWith('.js') ? 'application/javascript' : 'text/html; charset=utf-8';
      if (type.startsWith('text/html')) {
        const attrs = url.pathname === '/consent' ? ' data-consent="required"' : '';
        data = data
          .toString()
          .replaceAll('{{SERVER}}', cfg.pageServer || cfg.server)
          .replaceAll('{{KEY}}', cfg.key)
          .replaceAll('{{ATTRS}}', attrs);
      }
      res.writeHead(200, { 'content-type': type }).end(data);
    });
  });
  return new Promise((resolve) => server.listen(cfg.pagePort || 0, '127.0.0.1', () => resolve(server)));
}

/** A pass-through proxy in front of the trailspark server that records what arrives,
 * headers included: a beacon is told from a fetch by its `Sec-Fetch-Mode` (`no-cors`
 * against `cors`), which the browser sets, not the page. Beacons sent while a page is
 * left do not reach DevTools' network events, so they are observed here. */
function recordingProxy() {
  const target = new URL(cfg.server);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = { ...req.headers, host: target.host };
      const up = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
        (r) => {
          const back = [];
          r.on('data', (c) => back.push(c));
          r.on('end', () => {
            arrivals.push({
              method: req.method,
              path: req.url,
              mode: req.headers['sec-fetch-mode'] ?? null,
              dest: req.headers['sec-fetch-dest'] ?? null,
              contentType: req.headers['content-type'] ?? null,
              body: body.length ? body.toString() : null,
              status: r.statusCode,
            });
            res.writeHead(r.statusCode, r.headers).end(Buffer.concat(back));
          });
        },
      );
      up.on('error', (e) => res.writeHead(502).end(String(e)));
      up.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits up to 15 s for `done()`; the test then says what is missing. */
async function until(done) {
  for (let i = 0; i < 150 && !done(); i++) await sleep(100);
}

/** Records every request the page makes to the trailspark server, through the DevTools
 * protocol's Network domain directly: it also reports the beacons a page sends as it is
 * left (type `Ping`), which puppeteer's page-level events miss. */
async function recordRequests(page) {
  const requests = new Map();
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  cdp.on('Network.requestWillBeSent', (e) => {
    if (!e.request.url.startsWith(cfg.pageServer || cfg.server)) return;
    requests.set(e.requestId, {
      url: e.request.url,
      method: e.request.method,
      type: e.type,
      body: e.request.postData ?? null,
    });
  });
  cdp.on('Network.responseReceived', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.status = e.response.status;
  });
  cdp.on('Network.loadingFailed', (e) => {
    const r = requests.get(e.requestId);
    if (r) r.failure = e.errorText + (e.corsErrorStatus ? ` (${e.corsErrorStatus.corsError})` : '');
  });
  return requests;
}

async function analytics(page, origin) {
  await page.goto(`${origin}/analytics.html`, { waitUntil: 'load' });
  // `run` is the page's own function (pages/analytics.html).
  return page.evaluate((s, k, r) => window.run(s, k, r), cfg.server, cfg.key, cfg.run);
}

async function snippet(page, origin) {
  await page.goto(`${origin}/shop`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.trailspark && window.trailspark.loaded === true, { timeout: 10000 });
  const anonymousId = await page.evaluate(() => window.trailspark.anonymousId());
  // A single-page-app route change, then time for the batch to go out by fetch.
  await page.click('#pricing-link');
  await until(() => arrivals.some((a) => a.path === '/v1/b' && a.body.includes('/shop/pricing')));
  await page.type('#email', `buyer-${cfg.run}@example.com`);
  await page.type('#company', 'Globex Corporation');
  // The submission navigates to /thanks.html: its events leave by beacon as the page goes.
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('#submit')]);
  // Until the beacon has been answered (a busy machine may take a while).
  await until(() => arrivals.some((a) => a.mode === 'no-cors' && a.method === 'POST'));
  const cookie = (await page.cookies(origin)).find((c) => c.name === 'ts_aid');
  return { anonymousId, cookie: cookie ? cookie.value : null };
}

/** A page that requires consent: nothing leaves before `consent(true)`, the views and
 * calls after it do, and nothing after `consent(false)`. */
async function consent(page, origin) {
  const sent = () => arrivals.filter((a) => a.path === '/v1/b').length;
  await page.goto(`${origin}/consent`, { waitUntil: 'load' });
  await page.waitForFunction(() => window.trailspark && window.trailspark.loaded === true, { timeout: 10000 });
  await page.evaluate(() => trailspark.track('Before Consent'));
  await sleep(2500);
  const before = sent();
  await page.evaluate(() => {
    trailspark.consent(true);
    trailspark.track('After Consent');
  });
  await until(() => sent() > before);
  await page.evaluate(() => {
    trailspark.consent(false);
    trailspark.track('After Withdrawal');
  });
  await sleep(2500);
  // A later page of the site remembers the withdrawal.
  await page.goto(`${origin}/consent`, { waitUntil: 'load' });
  await sleep(2500);
  return { sentBeforeConsent: before };
}

/** From one page, with a key that allows the page's origin (`cfg.key`) and one that does
 * not (`cfg.deniedKey`): a JSON post (preflighted) and a text/plain one (a simple request,
 * no preflight) with each. Results are per key and content type. */
async function cors(page, origin) {
  await page.goto(`${origin}/blank.html`, { waitUntil: 'load' });
  return page.evaluate(async (server, keys, run) => {
    const attempt = async (key, event, contentType) => {
      try {
        const r = await fetch(`${server}/api/signal-staging/webhook/${key}`, {
          method: 'POST',
          headers: { 'Content-Type': contentType },
          body: JSON.stringify({ event, run, contentType, email: `cors-${run}@example.com` }),
        });
        return { ok: true, status: r.status, body: await r.json() };
      } catch (e) {
        return { ok: false, error: String(e) };
      }
    };
    const out = {};
    for (const [name, key] of Object.entries(keys)) {
      const event = name === 'allowed' ? 'Allowed' : 'Blocked';
      out[name] = {
        json: await attempt(key, event, 'application/json'),
        plain: await attempt(key, event, 'text/plain'),
      };
    }
    return out;
  }, cfg.server, { allowed: cfg.key, denied: cfg.deniedKey }, cfg.run);
}

const scenarios = { analytics, snippet, cors, consent };

async function main() {
  const proxy = await recordingProxy();
  // The snippet's page loads it, and sends, through the recording proxy.
  if (cfg.scenario === 'snippet' || cfg.scenario === 'consent') cfg.pageServer = `http://127.0.0.1:${proxy.address().port}`;
  const pages = await pageServer();
  const origin = `http://localhost:${pages.address().port}`;
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
  const out = { scenario: cfg.scenario, origin };
  try {
    const page = await browser.newPage();
    const console_ = [];
    page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
    const requests = await recordRequests(page);
    out.result = await scenarios[cfg.scenario](page, origin);
    out.requests = [...requests.values()];
    out.arrivals = arrivals;
    out.console = console_;
    if (cfg.artifacts) {
      fs.mkdirSync(cfg.artifacts, { recursive: true });
      out.screenshot = path.join(cfg.artifacts, `${cfg.scenario}.png`);
      await page.screenshot({ path: out.screenshot, fullPage: true });
    }
  } finally {
    await browser.close();
    pages.close();
    proxy.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
