#!/usr/bin/env bash
# The Sluice steps of a release pipeline, run by this composite action
# (action.yml) and playable anywhere `sluice` is on PATH:
#
#   sluice.sh gate            exit 1 unless a release may begin now (and say why)
#   sluice.sh rollout         start the release's rollout and follow it to the end:
#                             exit 0 succeeded, 1 rolled back, 3 aborted
#   sluice.sh start           start it and follow it to its first approval gate, then
#                             end the step: the job summary shows how to approve
#   sluice.sh follow          follow it to the end (after `start`)
#   sluice.sh report-failure  file a failed stage in the release's one backlog issue
#
# The spec is a template: its ${UPPER_CASE} placeholders are filled from the
# environment (`--fill-env`), and an unset one stops the step.
#
# Environment: SLUICE_URL, SLUICE_KEY (Sluice's key) and/or SLUICE_TOKEN /
# SLUICE_ENTRA_APP (Entra ID) / SLUICE_GITHUB_OIDC_AUDIENCE (the job's own
# OIDC token, fetched per call), SLUICE_SPEC (spec file),
# SLUICE_RELEASE (the rollout id: one per pipeline run, so a re-run is the
# same release), SLUICE_QUEUE (optional: start through Service Bus),
# SLUICE_STAGE, SLUICE_RUN_URL, SLUICE_LOG_FILE (report-failure).
set -euo pipefail

mode="${1:?usage: sluice.sh gate|rollout|start|follow|report-failure}"

case "$mode" in
  gate)
    sluice gate --fill-env --spec "${SLUICE_SPEC:?SLUICE_SPEC: the spec file}"
    ;;
  rollout)
    spec="${SLUICE_SPEC:?SLUICE_SPEC: the spec file}"
    release="${SLUICE_RELEASE:?SLUICE_RELEASE: the release (rollout) id}"
    if [ -n "${SLUICE_QUEUE:-}" ]; then
      sluice start "$spec" --fill-env --id "$release" --queue "$SLUICE_QUEUE"
      exec sluice watch "$release"
    fi
    exec sluice start "$spec" --fill-env --id "$release" --watch
    ;;
  start)
    release="${SLUICE_RELEASE:?SLUICE_RELEASE: the release (rollout) id}"
    if [ -n "${SLUICE_QUEUE:-}" ]; then
      sluice start "${SLUICE_SPEC:?SLUICE_SPEC: the spec file}" --fill-env --id "$release" --queue "$SLUICE_QUEUE"
    else
      sluice start "${SLUICE_SPEC:?SLUICE_SPEC: the spec file}" --fill-env --id "$release"
    fi
    exec sluice watch "$release" --until-approval
    ;;
  follow)
    exec sluice watch "${SLUICE_RELEASE:?SLUICE_RELEASE: the release (rollout) id}"
    ;;
  report-failure)
    args=(report-failure "${SLUICE_RELEASE:?SLUICE_RELEASE: the release (rollout) id}"
      --stage "${SLUICE_STAGE:?SLUICE_STAGE: the stage that failed}"
      --spec "${SLUICE_SPEC:?SLUICE_SPEC: the spec file}" --fill-env)
    if [ -n "${SLUICE_RUN_URL:-}" ]; then args+=(--run-url "$SLUICE_RUN_URL"); fi
    if [ -n "${SLUICE_LOG_FILE:-}" ] && [ -f "$SLUICE_LOG_FILE" ]; then args+=(--log-file "$SLUICE_LOG_FILE"); fi
    exec sluice "${args[@]}"
    ;;
  *)
    echo "sluice.sh: unknown step '$mode' (gate, rollout, start, follow, report-failure)" >&2
    exit 2
    ;;
esac
