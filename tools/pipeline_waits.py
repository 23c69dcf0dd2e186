"""Checks, on paper, that a release pipeline holds no agent while it waits
for a Sluice rollout, and that every job has a timeout.

    python3 tools/pipeline_waits.py PIPELINE.yml SPEC.json

An Azure Pipelines file:
- Every job and deployment job sets `timeoutInMinutes` (Microsoft-hosted
  jobs are cancelled at 60 minutes otherwise; Learn, "Jobs").
- No job on an agent waits for the rollout's end: no `templates/sluice.yml`
  step `rollout` (start and follow), no `sluice watch` or `--watch` in a script.
- The rollout's end is waited for by `templates/sluice-await.yml` in an
  agentless job (`pool: server`) whose timeout outlasts the spec's longest
  approval timeout.

A GitHub workflow (no agentless jobs there): every job sets
`timeout-minutes`, and no job runs the action's `rollout` or `follow` step
or `sluice watch` without `--until-approval`.

Exits 1 naming each finding.
"""

import json
import re
import sys
from pathlib import Path

from ruamel.yaml import YAML

UNITS = {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}


def minutes(duration):
    """A spec duration ('4h', '90m', '1h30m') in minutes."""
    parts = re.findall(r"(\d+)([smhd])", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"'{duration}' is not a duration")
    return sum(int(n) * UNITS[u] for n, u in parts)


def longest_approval(spec):
    """The longest approval timeout a spec's steps set, in minutes."""
    found = [0.0]

    def walk(node):
        if isinstance(node, dict):
            approval = node.get("approval")
            if isinstance(approval, dict) and isinstance(approval.get("timeout"), str):
                found.append(minutes(approval["timeout"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return max(found)


def steps_of(job):
    """A job's steps, a deployment job's included."""
    steps = list(job.get("steps") or [])
    strategy = job.get("strategy") or {}
    for kind in strategy.values():
        for hook in (kind or {}).values():
            steps.extend((hook or {}).get("steps") or [])
    return steps


def check_github(doc):
    """A GitHub workflow: no runner is held until the rollout's end (there are no agentless jobs)."""
    findings = []
    for name, job in (doc.get("jobs") or {}).items():
        if job.get("timeout-minutes") is None:
            findings.append(f"job {name}: no timeout-minutes")
        for step in job.get("steps") or []:
            uses, given = str(step.get("uses", "")), step.get("with") or {}
            if uses.endswith("actions/sluice") and given.get("step") in ("rollout", "follow"):
                findings.append(f"job {name}: holds its runner until the rollout ends (step '{given['step']}')")
            if re.search(r"sluice\s+watch(?![^\n]*--until-approval)|--watch\b", str(step.get("run", ""))):
                findings.append(f"job {name}: holds its runner watching the rollout")
    return findings


def check(pipeline_path, spec_path):
    yaml = YAML(typ="safe")
    doc = yaml.load(Path(pipeline_path).read_text())
    if "jobs" in doc and "stages" not in doc:
        return check_github(doc)
    approval = longest_approval(json.loads(Path(spec_path).read_text()))
    findings = []
    awaited = False
    jobs = [job for stage in doc.get("stages") or [] for job in stage.get("jobs") or []]
    for job in jobs:
        name = job.get("job") or job.get("deployment") or "?"
        timeout = job.get("timeoutInMinutes")
        if timeout is None:
            findings.append(f"job {name}: no timeoutInMinutes")
        agentless = job.get("pool") == "server"
        for step in steps_of(job):
            template = str(step.get("template", ""))
            params = step.get("parameters") or {}
            script = " ".join(str(step.get(k, "")) for k in ("bash", "script", "pwsh", "powershell"))
            if template.endswith("sluice.yml") and params.get("step") == "rollout":
                findings.append(f"job {name}: holds its agent until the rollout ends (sluice.yml step 'rollout')")
            if re.search(r"sluice\s+watch|--watch\b", script):
                findings.append(f"job {name}: holds its agent watching the rollout")
            if template.endswith("sluice-await.yml"):
                awaited = True
                if not agentless:
                    findings.append(f"job {name}: waits for the rollout on an agent (pool must be server)")
                if timeout is None or float(timeout) <= approval:
                    findings.append(f"job {name}: timeoutInMinutes {timeout} does not outlast the spec's approval timeout ({approval:g} minutes)")
    if not awaited:
        findings.append("no job waits for the rollout's end (templates/sluice-await.yml in a pool: server job)")
    return findings


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    findings = check(sys.argv[1], sys.argv[2])
    for finding in findings:
        print(f"{sys.argv[1]}: {finding}", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
