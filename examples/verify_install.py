"""Check an installed (merged) model against PEFT: θ′ + Δθ by patchctl vs PeftModel on θ′.

Usage: python examples/verify_install.py MERGED_DIR NEW_BASE_DIR ADAPTER_DIR

Loads MERGED_DIR with transformers, and NEW_BASE_DIR + ADAPTER_DIR with PEFT, then compares
(1) every merged tensor with PEFT's merge_and_unload() (must be bit-identical) and (2) the
logits of both on a fixed batch. Prints one JSON line; exits 1 on any mismatch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main(merged: Path, base: Path, adapter: Path) -> int:
    ours = AutoModelForCausalLM.from_pretrained(merged).eval()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    ids = torch.randint(3, ours.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_ours = ours(ids).logits
        logits_peft = peft_model(ids).logits
    reference = peft_model.merge_and_unload().state_dict()
    written: dict[str, torch.Tensor] = {}
    for f in sorted(merged.glob("*.safetensors")):
        written.update(load_file(f))
    differing = [k for k, t in written.items() if k in reference and not torch.equal(t, reference[k])]
    max_diff = float((logits_ours - logits_peft).abs().max())
    ok = not differing and max_diff < 1e-4
    print(
        json.dumps(
            {
                "tensors_compared": sum(k in reference for k in written),
                "tensors_differing_from_merge_and_unload": len(differing),
                "max_abs_logit_diff_vs_peft": max_diff,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
