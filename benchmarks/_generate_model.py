"""The random-weight Wan2.1 I2V model ``generate.py`` measures: the tiny test model's
layout (``vidshard.generation.tiny``), made big enough that a denoising step is seconds of
computation on one core, so the collectives of a group are a small share of it.

- transformer: 4 blocks of 8 heads x 48 = 384 wide, FFN 1536, image cross-attention with
  its own K/V projections as Wan2.1 I2V has them (``added_kv_proj_dim``): about 12 M
  parameters; each step is two passes (conditional and unconditional: guidance > 1);
- text encoder: a 4-layer UMT5, 256 wide, whose 64k-token embedding holds most of its
  21 M parameters, as UMT5-XXL's 256k x 4096 embedding holds a good share of its 5.7 B;
  it runs once per request, so it weighs on memory (what FSDP shards), not on step time;
- VAE and CLIP image encoder: the tiny test model's (a step does not run them).

Written once under the benchmarks' cache folder (``$VIDSHARD_BENCH_CACHE``), with
``save_pretrained``, and loaded by the ranks as a real checkpoint is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """The sizes of the benchmark model (see the module docstring)."""

    layers: int = 4
    heads: int = 8  # divisible by 4: Ulysses 4 splits them
    head_dim: int = 48
    ffn_dim: int = 1536
    text_dim: int = 256
    text_layers: int = 4
    text_ffn_dim: int = 1024
    text_vocab: int = 65536
    image_dim: int = 64  # the CLIP image encoder's width

    @property
    def folder_name(self) -> str:
        digest = hashlib.sha1(
            json.dumps(asdict(self), sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()[:8]
        return f"bench-wan-i2v-{digest}"


def _transformer(spec: ModelSpec) -> object:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=spec.heads,
        attention_head_dim=spec.head_dim,
        in_channels=36,
        out_channels=16,
        text_dim=spec.text_dim,
        freq_dim=256,
        ffn_dim=spec.ffn_dim,
        num_layers=spec.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=spec.image_dim,
        added_kv_proj_dim=spec.heads * spec.head_dim,
        rope_max_seq_len=1024,
    )


def _text_encoder(spec: ModelSpec) -> object:
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(
        UMT5Config(
            vocab_size=spec.text_vocab,
            d_model=spec.text_dim,
            d_kv=spec.text_dim // 4,
            d_ff=spec.text_ffn_dim,
            num_layers=spec.text_layers,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _components(spec: ModelSpec) -> dict[str, object]:
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from vidshard.generation.tiny import _tokenizer  # the tiny model's: any text tokenizes

    torch.manual_seed(0)
    transformer = _transformer(spec)
    text_encoder = _text_encoder(spec)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=spec.image_dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=4 * spec.image_dim,
            patch_size=4,
        )
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        ),
        "text_encoder": text_encoder,
        "tokenizer": _tokenizer(),
        "image_encoder": image_encoder,
        "image_processor": CLIPImageProcessor(crop_size=32, size=32),
    }


def bench_model(folder: Path, spec: ModelSpec | None = None) -> Path:
    """The benchmark model under ``folder`` (written once, then reused)."""
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import WanImageToVideoPipeline

    diffusers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars
    transformers.utils.logging.disable_progress_bar()
    spec = spec or ModelSpec()
    target = Path(folder) / spec.folder_name
    if (target / "model_index.json").is_file():
        return target
    pipe = WanImageToVideoPipeline(**_components(spec))  # type: ignore[arg-type]
    partial = target.with_name(target.name + ".partial")
    pipe.save_pretrained(str(partial))
    partial.rename(target)
    return target
