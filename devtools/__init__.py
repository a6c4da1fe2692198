"""Development servers: what tests, benchmarks and `tablebot demo` run, never what Lambda runs.

- `devtools.slack_api`: a local HTTP server that speaks the Slack Web API (and signs requests).
- `devtools.sandbox`: emulators of the BigPanda and D·engage APIs (`tablebot sandbox`).
- `devtools.demo`: `tablebot demo`, the real bot driven through a scripted Slack conversation.

`scripts/build-lambda.sh` packages `bot/` and `handlers/` only; nothing under `bot/` imports this
package except the CLI commands `demo` and `sandbox`, lazily.
"""
