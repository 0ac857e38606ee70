"""The vault as a service: ``hitl-vault serve``, the daemon and an HTTP server in one
process (the REST API, MCP over HTTP, the gate over HTTP), and the Unix socket through
which a person's OS user decides with proof."""
