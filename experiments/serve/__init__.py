"""`gavel serve`: a judge behind HTTP, as an operator deploys it, with the keys, quotas, bans and signed inputs whose
value gavel measures. One module per concern: `settings` (the `serve:` block), `deployment` (the judge and its
shield, built as a run builds them), `store` (keys and the ledger, SQLite or PostgreSQL), `tokens` (API keys),
`limits` (quota windows and rates), `signatures` (signed inputs), `service` (admission, answer, record), `app`
(HTTP), `server` (uvicorn), `command` and `keys_command` (the CLI), `usage` (`gavel keys usage`)."""
