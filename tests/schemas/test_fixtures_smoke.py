from pathlib import Path

from patchctl.bases import read_local_base
from patchctl.schemas import read_adapter_config


def test_pico_models_and_adapters(pico_llama: Path, pico_llama_sharded: Path, llama_adapter: Path) -> None:
    single = read_local_base(pico_llama)
    sharded = read_local_base(pico_llama_sharded)
    assert len(sharded.weight_files) > 1
    assert single.structure_sha256 == sharded.structure_sha256
    assert single.weights_sha256 != sharded.weights_sha256
    cfg = read_adapter_config(llama_adapter)
    assert cfg.is_lora and cfg.r == 4
