"""A tiny random-weight Wan2.1 image-to-video model, to try ``vidshard generate`` without
downloading 14B weights (its videos are noise; the plumbing is real) and for tests.

    python -m vidshard.generation.tiny /tmp/models    # writes /tmp/models/tiny-wan-i2v

It builds in a second or two with no download: the transformer, VAE and CLIP image
encoder take the configs of diffusers' own fast tests (tests/pipelines/wan/
test_wan_image_to_video.py), the text encoder is a two-layer UMT5 made from a config, and
the tokenizer is a word-level ``tokenizers`` model wrapped as a T5 tokenizer. Everything
is saved with ``save_pretrained``, so it loads like a real checkpoint. Its attention has
:data:`HEADS` heads (a Ulysses degree must divide them) and its image encoder sees 32x32.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

# Words the tokenizer knows; anything else is <unk>. Prompts in tests use these.
VOCAB_WORDS = (
    *("a", "cat", "walks", "on", "the", "grass", "slowly", "camera", "pans", "left", "right"),
    *("dog", "runs", "blurry", "static", "low", "quality", "ugly", "bright", "sky", "sea"),
    *("waves", "red", "blue", "green"),
)
TEXT_DIM = 32  # the transformer's text_dim and the text encoder's d_model
HEADS = 2  # attention heads of the transformer (Ulysses degree must divide it)


def _tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over :data:`VOCAB_WORDS` and the letters, so any text
    tokenizes (unknown words letter by letter)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + word, -1.0) for word in VOCAB_WORDS]
    pieces += [(letter, -5.0) for letter in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _components(scheduler: str) -> dict[str, object]:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    tokenizer = _tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=HEADS,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
    )
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=4,
        )
    )
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    if scheduler == "unipc":
        sched: object = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
        )
    else:
        sched = FlowMatchEulerDiscreteScheduler(shift=7.0)
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": sched,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "image_encoder": image_encoder,
        "image_processor": image_processor,
    }


def write_tiny_model(folder: Path, *, scheduler: str = "unipc") -> Path:
    """Save the tiny pipeline under ``folder / "tiny-wan-i2v"`` (once: an existing one is
    reused) and return that folder."""
    from vidshard._compat.torchvision_ops import ensure_torchvision_ops

    ensure_torchvision_ops()
    from diffusers import WanImageToVideoPipeline

    target = Path(folder) / "tiny-wan-i2v"
    if (target / "model_index.json").is_file():
        return target
    pipe: Any = WanImageToVideoPipeline(**_components(scheduler))  # type: ignore[arg-type]
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # a run that stopped half way
    pipe.save_pretrained(str(partial))
    partial.rename(target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m vidshard.generation.tiny FOLDER", file=sys.stderr)
        return 2
    print(write_tiny_model(Path(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
