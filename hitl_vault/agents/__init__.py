"""Agents asking the vault: hook formats, the gate, hook install, and the MCP server."""
