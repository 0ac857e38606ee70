"""Request notes: strict reading, surgical edits, rendering, and keeping notes and the
journal in step."""
