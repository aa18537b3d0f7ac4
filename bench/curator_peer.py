"""The curator peer of bench/peers.py. Runs inside curator's own virtual environment (never a
dependency of the product), so it imports nothing from this repository.

    python bench/curator_peer.py BASE_URL REQUESTS CALLS_PER_MINUTE MODEL   # prints the wall time in seconds
"""

import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ANTHROPIC_API_KEY", "standin")  # the stand-in takes any key; curator insists on one
os.environ.setdefault("CURATOR_DISABLE_CACHE", "true")
os.environ.setdefault("CURATOR_CACHE_DIR", tempfile.mkdtemp(prefix="curator-"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network here
os.environ.setdefault("TELEMETRY_ENABLED", "False")
# curator counts tokens with tiktoken's cl100k_base, which tiktoken downloads; litellm ships the
# file under the name tiktoken's cache uses.
os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR",
    str(Path(importlib.util.find_spec("litellm").origin).parent / "litellm_core_utils" / "tokenizers"),
)

from bespokelabs import curator


class Conversations(curator.LLM):
    def prompt(self, row: dict) -> str:
        return f"Write conversation {row['n']} as JSON."

    def parse(self, row: dict, response: str) -> dict:
        return {"n": row["n"]}


def main(base_url: str, requests: int, calls_per_minute: int, model: str) -> None:
    llm = Conversations(
        model_name=model,
        backend="anthropic",
        backend_params={
            "base_url": base_url.rstrip("/") + "/v1",
            "api_key": "standin",
            "max_requests_per_minute": calls_per_minute,
            "max_input_tokens_per_minute": 10_000_000,
            "max_output_tokens_per_minute": 10_000_000,
        },
        generation_params={"max_tokens": 2048},
    )
    started = time.monotonic()
    llm([{"n": n} for n in range(requests)])
    print(time.monotonic() - started)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
