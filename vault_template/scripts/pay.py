"""A demo executor: it pays nothing, it only records the approved payment.

hitl-vault runs it with the approved request as JSON on stdin. Replace it with
a script that calls your payment provider, passing `idempotency_key` along so a
retry after a crash cannot pay twice.
"""

import json
import sys
from pathlib import Path

request = json.load(sys.stdin)
params = request["params"]
log = Path(__file__).with_name("payments.log")
with log.open("a", encoding="utf-8") as f:
    f.write(json.dumps({"id": request["id"], "params": params}) + "\n")
count = sum(1 for _ in log.open(encoding="utf-8"))
print(f"Demo payment recorded: {params.get('amount')} to {params.get('recipient')} (entry {count})")
