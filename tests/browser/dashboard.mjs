// Drives the dashboard in Debian's Chromium, headless, for tests/dashboard.rs and scripts/screenshots.
// Usage: node dashboard.mjs <step> ; env SLUICE_URL, ROLLOUT_ID, SHOTS (a directory), CHROMIUM,
// PLAYWRIGHT_CORE (the installed package's index.mjs, from .tools/node_modules).
// Prints one JSON object on stdout: what the page showed. Steps:
//   approve  - the rollout page at its approval gate: chart data, then a double-clicked Approve,
//              then Approve again (which Sluice refuses: the same person cannot approve twice),
//              then a second person's Approve, which moves the rollout on
//   final    - the rollout page once finished, the overview (with a service filter) and the report
//   release  - a release's page at its gate between waves (ROLLOUT_ID is the release's id): the waves
//              with their rollouts, a double-clicked Approve, the page once the release succeeded, the overview
//   demo     - the rollout page at its approval gate (if it gets there) as $NAME-gate.png and once
//              finished as $NAME.png, with its charts (scripts/screenshots, and the judged rollback's test)
//   report   - for scripts/screenshots: the overview and the release-health report (overview.png, report.png)
//   signin   - where Sluice checks tokens: the rollout page sends the browser to the provider's sign-in, comes
//              back with a code, trades it (PKCE) and shows the rollout as the signed-in person; Approve; then
//              Sign out, which leaves a page that asks to sign in again and keeps no token
const { chromium } = await import(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const [step] = process.argv.slice(2);
const url = process.env.SLUICE_URL, id = process.env.ROLLOUT_ID, shots = process.env.SHOTS;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // No network but loopback here: keep Chromium from reaching out at all.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
  const pageErrors = [];
  page.on('pageerror', e => pageErrors.push(String(e)));
  const charts = () => page.$$eval('.card.metric', cards => cards.map(c => ({
    metric: c.dataset.metric,
    points: Number(c.dataset.points),
    marks: c.querySelectorAll('circle.verdict').length,
    values: [...c.querySelectorAll('circle.verdict')].map(m => Number(m.dataset.value)),
    threshold: !!c.querySelector('line.threshold, text.threshold-off'),
    stable: !!c.querySelector('polyline.stable'),
    bounds: [...c.querySelectorAll('line.bound-mark')].map(m => Number(m.dataset.value)),
    rule: c.querySelector('h3 .muted')?.textContent ?? '',
  })));
  // The report's trend bars: how many of each kind they count, in all.
  const trend = () => page.$$eval('#trend rect.trend', rs => rs.reduce((sum, r) => {
    const kind = r.classList[1];
    sum[kind] = (sum[kind] || 0) + Number(r.dataset.count);
    return sum;
  }, {}));
  // The release-health view: its table's rows and trend, and a screenshot.
  const reportPage = async () => {
    await page.goto(`${url}/api/dashboard?view=report`);
    await page.waitForSelector('#report-table');
    out.report = await page.$$eval('#report-table tr', rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent.trim())));
    out.trend = await trend();
    await page.screenshot({ path: `${shots}/report.png`, fullPage: true });
  };
  if (step !== 'release' && step !== 'report') await page.goto(`${url}/api/dashboard/${encodeURIComponent(id)}`);
  if (step === 'approve') {
    await page.waitForSelector('button[data-action="approve"]', { timeout: 20000 });
    await page.waitForSelector('.card.metric', { timeout: 20000 });
    out.signedIn = await page.textContent('#who');
    out.charts = await charts();
    out.weightChart = await page.$eval('#weight-chart path', p => p.getAttribute('d'));
    out.preview = await page.$$eval('#root p', ps => (ps.map(p => p.textContent).find(t => t.startsWith('Preview:')) || null));
    await page.screenshot({ path: `${shots}/rollout-approval.png`, fullPage: true });
    await page.dblclick('button[data-action="approve"]');
    await page.waitForSelector('#result .ok', { timeout: 15000 });
    out.approved = await page.textContent('#result');
    await page.waitForSelector('button[data-action="approve"]:not([disabled])', { timeout: 15000 });
    await page.click('button[data-action="approve"]');
    await page.waitForSelector('#result .error', { timeout: 15000 });
    out.refused = await page.textContent('#result');
    await page.screenshot({ path: `${shots}/rollout-refused.png`, fullPage: true });
    // A second person in their own browser session (App Service authentication would set the
    // principal; `sluice up --as` stands in for it, and a request that names someone keeps its name).
    const bob = await browser.newContext({ viewport: { width: 1200, height: 1400 }, extraHTTPHeaders: { 'x-sluice-user': 'bob' } });
    const second = await bob.newPage();
    second.on('pageerror', e => pageErrors.push(String(e)));
    await second.goto(`${url}/api/dashboard/${encodeURIComponent(id)}`);
    await second.waitForSelector('button[data-action="approve"]', { timeout: 20000 });
    out.secondSignedIn = await second.textContent('#who');
    await second.click('button[data-action="approve"]');
    await second.waitForSelector('#result .ok', { timeout: 15000 });
    out.secondApproved = await second.textContent('#result');
  } else if (step === 'final') {
    await page.waitForSelector('.phase.Succeeded, .phase.RolledBack', { timeout: 30000 });
    await page.waitForTimeout(300);
    out.phase = await page.textContent('h2 .phase');
    out.buttons = await page.$$eval('button[data-action]', bs => bs.map(b => b.dataset.action));
    out.charts = await charts();
    await page.screenshot({ path: `${shots}/rollout-final.png`, fullPage: true });
    await page.goto(`${url}/api/dashboard?service=orders-api`);
    await page.waitForSelector('#f-service');
    out.overview = await page.$$eval('table tr[data-active]', rows => rows.map(r => r.querySelector('a').textContent));
    out.filter = await page.$eval('#f-service', s => s.value);
    await page.goto(`${url}/api/dashboard?service=no-such-service`);
    await page.waitForSelector('#f-service');
    out.filteredOut = await page.$$eval('table tr[data-active]', rows => rows.length);
    await reportPage();
  } else if (step === 'release') {
    // ROLLOUT_ID is the release's id here: its page at the gate between waves, approved with a double click.
    await page.goto(`${url}/api/dashboard?release=${encodeURIComponent(id)}`);
    await page.waitForSelector('button[data-release="approve"]', { timeout: 30000 });
    const waves = () => page.$$eval('.card.wave', cards => cards.map(c => ({
      state: c.dataset.state,
      phases: [...c.querySelectorAll('.phase')].map(p => p.textContent),
      links: [...c.querySelectorAll('a')].map(a => a.textContent),
    })));
    out.gated = await waves();
    await page.screenshot({ path: `${shots}/release-gate.png`, fullPage: true });
    await page.dblclick('button[data-release="approve"]');
    await page.waitForSelector('#result .ok', { timeout: 15000 });
    out.approved = await page.textContent('#result');
    await page.waitForSelector('h2 .phase.Succeeded', { timeout: 60000 });
    await page.waitForTimeout(300);
    out.final = await waves();
    await page.screenshot({ path: `${shots}/release-final.png`, fullPage: true });
    await page.goto(`${url}/api/dashboard`);
    await page.waitForSelector('#releases');
    out.overview = await page.$$eval('#releases tr', rows => rows.slice(1).map(r => r.querySelector('a').textContent));
  } else if (step === 'demo') {
    const name = process.env.NAME || 'demo';
    const finished = 'h2 .phase.Succeeded, h2 .phase.RolledBack, h2 .phase.Aborted';
    await page.waitForSelector(`h2 .phase.AwaitingApproval, ${finished}`, { timeout: 90000 });
    if (await page.$('h2 .phase.AwaitingApproval')) {
      await page.waitForTimeout(300);
      out.gate = await charts();
      await page.screenshot({ path: `${shots}/${name}-gate.png`, fullPage: true });
    }
    await page.waitForSelector(finished, { timeout: 90000 });
    await page.waitForTimeout(2500); // the page's next refresh draws the rollback's last measurements
    out.phase = await page.textContent('h2 .phase');
    out.charts = await charts();
    out.observed = await page.$$eval('#weight-chart circle.observed', cs => cs.map(c => c.textContent.trim()));
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  } else if (step === 'signin') {
    await page.waitForSelector('button[data-action="approve"]', { timeout: 30000 });
    out.url = page.url();
    out.signedIn = await page.textContent('#signed-in');
    await page.screenshot({ path: `${shots}/signed-in.png`, fullPage: true });
    await page.click('button[data-action="approve"]');
    await page.waitForSelector('#result .ok, #result .error', { timeout: 15000 });
    out.approved = await page.textContent('#result');
    await page.click('#sign-out');
    await page.waitForSelector('#signed-out', { timeout: 15000 });
    out.signedOut = await page.textContent('#signed-out');
    out.tokensKept = await page.evaluate(() => sessionStorage.getItem('sluice-tokens'));
  } else if (step === 'report') {
    await page.goto(`${url}/api/dashboard`);
    await page.waitForSelector('table tr[data-active]');
    out.overview = await page.$$eval('table tr[data-active]', rows => rows.length);
    await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
    await reportPage();
  } else {
    throw new Error(`unknown step ${step}`);
  }
  out.pageErrors = pageErrors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
