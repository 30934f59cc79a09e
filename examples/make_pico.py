"""Generate the demo's tiny models: a pico Llama base θ, θ′ (its "new release") and a LoRA adapter.

Usage: python examples/make_pico.py OUT_DIR

Writes OUT_DIR/pico-llama, OUT_DIR/pico-llama-v2 and OUT_DIR/pico-llama-lora (a PEFT LoRA
adapter with non-zero B, so the patch changes the model). Models that already exist are kept,
so re-running the demo pushes identical content (a no-op). Nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import picomodels


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base, updated, adapter = out / "pico-llama", out / "pico-llama-v2", out / "pico-llama-lora"
    if not (base / "config.json").is_file():
        picomodels.make_base(base, "llama")
    if not (updated / "config.json").is_file():
        picomodels.make_updated_base(base, updated)
    if not (adapter / "adapter_config.json").is_file():
        picomodels.make_adapter(base, adapter)
    for p in (base, updated, adapter):
        print(p)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
