"""The pages people decide on from a phone or a browser: the decision page a signed link
opens (``/d/...``), their templates (Jinja2, autoescaping) and stylesheet, and what keeps
them safe (headers, CSRF tokens, attempt limits). ``serve``'s app mounts them."""
