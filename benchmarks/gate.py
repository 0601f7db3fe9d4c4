"""Forward-pass cost of SAEGate: gated vs ungated vs the original script's formula.

Four variants run interleaved on the same random model and batch, so machine load affects
them alike:

* ``ungated``   -- the plain forward pass;
* ``relu gate`` -- SAEGate with ReLU SAEs (only the encoder columns of S are computed);
* ``topk gate`` -- SAEGate with TopK SAEs (full pre-activations for the top-k rank, decode S);
* ``original``  -- the anchor: the original script's fixed linear map ``h − α D_S E_S h``
  computed as it did, with a dense full encode ``E h`` (no activation) and two full decodes.

Each gate attenuates 64 features at 3 layers with ``d_sae = 16 · d_model``.

CPU (default, a few minutes at most)::

    python benchmarks/gate.py

GPU (a Qwen2-1.5B-sized random model in bf16, batch 8, 256 tokens, prefill)::

    python benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b

With ``--matmul-precision high`` the gates' fp32 matmuls may use TF32 on the GPU.
``--topk-precision fp32 mixed auto`` times the exact TopK gate's precisions side by side
and checks that each gives the fp32 gate's logits bit for bit.

A model split across ``cuda:0`` and ``cpu`` with an accelerate device map, gated on both
sides (checks placement; prints the gated logits' difference to the single-GPU run)::

    python benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --split
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from mmie.edits.sae_gate import SAEGate
from mmie.models.blocks import block_device, get_blocks
from mmie.models.hooks import BlockIntervention, Edit
from mmie.sae.config import SAEConfig
from mmie.sae.model import SparseAutoencoder

PRESETS: dict[str, dict[str, Any]] = {
    # d_model 512, 6 blocks, a Qwen2-like MLP ratio; vocabulary kept small for the CPU.
    "small": {
        "hidden_size": 512,
        "intermediate_size": 2816,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 8192,
        "batch": 2,
        "seq": 128,
    },
    # Qwen2-1.5B's shapes.
    "qwen2-1.5b": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "batch": 8,
        "seq": 256,
    },
}
N_FEATURES = 64
EXPANSION = 16


class OriginalFormula(BlockIntervention):
    """The anchor: ``h + (D (E h ⊙ m) − D E h)`` with ``m = 1 − α·1_S``, i.e. ``h − α D_S E_S h``.

    Computed as the original script did: a dense full encode and two full decodes per token,
    in the SAE's dtype. Tensors are placed per block at attach time.
    """

    def __init__(
        self,
        model: nn.Module,
        saes: dict[int, SparseAutoencoder],
        features: dict[int, list[int]],
        alpha: float,
    ) -> None:
        super().__init__(model)
        self.saes, self.features, self.alpha = saes, features, alpha

    def _build_edits(self) -> list[tuple[int, Edit]]:
        edits: list[tuple[int, Edit]] = []
        for layer, sae in self.saes.items():
            device = block_device(self.model, layer)
            w_enc = sae.W_enc.detach().to(device)
            b_enc = sae.b_enc.detach().to(device)
            w_dec = sae.W_dec.detach().to(device)
            mask = torch.ones(sae.d_sae, device=device, dtype=w_enc.dtype)
            mask[self.features[layer]] = 1.0 - self.alpha
            edits.append((layer, self._make(w_enc, b_enc, w_dec, mask)))
        return edits

    @staticmethod
    def _make(w_enc: Tensor, b_enc: Tensor, w_dec: Tensor, mask: Tensor) -> Edit:
        def edit(h: Tensor) -> Tensor:
            z = h.to(w_enc.dtype) @ w_enc + b_enc  # (batch, seq, d_sae): dense, no activation
            full = z @ w_dec  # (batch, seq, d_model)
            edited = (z * mask) @ w_dec
            return h + (edited - full).to(h.dtype)

        return edit


def build_model(preset: str, device: torch.device, dtype: torch.dtype, layers: int | None) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in PRESETS[preset].items() if k not in ("batch", "seq")}
    if layers is not None:
        fields["num_hidden_layers"] = layers
    config = AutoConfig.for_model(
        "qwen2", max_position_embeddings=4096, tie_word_embeddings=True, **fields
    )
    torch.manual_seed(0)  # benchmark script: global seeding is fine here
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_sae(
    arch: str, d_model: int, seed: int, device: torch.device, dtype: torch.dtype
) -> SparseAutoencoder:
    d_sae = EXPANSION * d_model
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_model, generator=g)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    tensors = {
        "W_enc": w_dec.T.contiguous() * 0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.01,
        "W_dec": w_dec,
        "b_dec": torch.zeros(d_model),
    }
    k = 64 if arch == "topk" else None
    config = SAEConfig(architecture=arch, d_in=d_model, d_sae=d_sae, k=k, dtype=str(dtype))  # type: ignore[arg-type]
    return SparseAutoencoder.from_tensors(config, tensors, device=device)


def gated_layers(n_layers: int) -> list[int]:
    return sorted({n_layers // 4, n_layers // 2, (3 * n_layers) // 4})


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run_speed(args: argparse.Namespace) -> None:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    preset = PRESETS[args.preset]
    batch, seq = args.batch or preset["batch"], args.seq or preset["seq"]
    model = build_model(args.preset, device, dtype, args.layers)
    d_model = model.config.hidden_size
    layers = gated_layers(model.config.num_hidden_layers)
    g = torch.Generator().manual_seed(1)
    features = {
        layer: torch.randperm(EXPANSION * d_model, generator=g)[:N_FEATURES].tolist()
        for layer in layers
    }
    saes = {
        arch: {layer: random_sae(arch, d_model, 10 + layer, device, dtype) for layer in layers}
        for arch in ("relu", "topk")
    }
    input_ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g).to(device)

    def forward() -> None:
        with torch.inference_mode():
            model(input_ids=input_ids, use_cache=False)

    variants: dict[str, BlockIntervention | None] = {
        "ungated": None,
        "relu gate": SAEGate(model, saes["relu"], features, alpha=1.0),
    }
    precisions = list(dict.fromkeys(args.topk_precision))
    for precision in precisions:
        name = "topk gate" if precisions == ["auto"] else f"topk gate ({precision})"
        variants[name] = SAEGate(model, saes["topk"], features, alpha=1.0, topk_precision=precision)
    variants["original"] = OriginalFormula(model, saes["relu"], features, alpha=1.0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.warmup + args.repeats):
        for name, intervention in variants.items():
            if intervention is None:
                elapsed = timed(forward, device)
            else:
                with intervention:
                    elapsed = timed(forward, device)
            if round_ >= args.warmup:
                times[name].append(elapsed)
    base = statistics.median(times["ungated"])
    anchor = statistics.median(times["original"])
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"# {args.preset}: {n_params / 1e6:.0f}M params, d_model {d_model}, "
        f"{model.config.num_hidden_layers} blocks, {args.dtype} on {device}, fp32 matmul "
        f"precision {torch.get_float32_matmul_precision()!r}"
        + (
            f" ({torch.cuda.get_device_name(device)})"
            if device.type == "cuda"
            else f" ({torch.get_num_threads()} threads)"
        )
    )
    print(
        f"# batch {batch} x {seq} tokens (prefill, no cache), gated layers {layers}, "
        f"d_sae {EXPANSION * d_model}, |S| {N_FEATURES}, topk k 64; median of {args.repeats} "
        f"interleaved rounds after {args.warmup} warm-up"
    )
    print("| variant | median ms | vs ungated | vs original |\n|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {1e3 * med:.1f} | {med / base:.3f}x | {med / anchor:.3f}x |")
    topk = {n: v for n, v in variants.items() if n.startswith("topk gate") and v is not None}
    if len(topk) > 1:
        check_exact(model, input_ids, topk)


def check_exact(model: Any, input_ids: Tensor, gates: dict[str, BlockIntervention]) -> None:
    """Whether every TopK precision gives the fp32 gate's logits bit for bit, and how often
    the candidate pass ran (its union of candidate columns) or fell back to fp32."""
    from mmie.edits import sae_gate

    calls: list[int | None] = []
    candidates = sae_gate._MixedTopK.candidates

    def counted(self: Any, *args: Any, **kw: Any) -> Any:
        cols = candidates(self, *args, **kw)
        calls.append(None if cols is None else int(cols.numel()))
        return cols

    logits: dict[str, Tensor] = {}
    sae_gate._MixedTopK.candidates = counted  # type: ignore[method-assign]
    try:
        for name, gate in gates.items():
            calls.clear()
            with gate, torch.inference_mode():
                logits[name] = model(input_ids=input_ids, use_cache=False).logits.float()
            used = [c for c in calls if c is not None]
            if calls:
                print(
                    f"# {name}: candidate pass in {len(used)} of {len(calls)} gated calls"
                    + (
                        f", {statistics.median(used):.0f} candidate columns (median)"
                        if used
                        else ""
                    )
                )
    finally:
        sae_gate._MixedTopK.candidates = candidates  # type: ignore[method-assign]
    reference = next((v for n, v in logits.items() if "fp32" in n), None)
    if reference is None:
        return
    for name, value in logits.items():
        diff = float((value - reference).abs().max())
        print(
            f"# {name}: logits equal to the fp32 gate's: {torch.equal(value, reference)} "
            f"(max |diff| {diff:.3g})"
        )


def run_split(args: argparse.Namespace) -> None:
    """Gate a model split across cuda:0 and the CPU; compare with the single-GPU run."""
    from accelerate import dispatch_model

    if args.device != "cuda":
        raise SystemExit("--split needs --device cuda")
    dtype = getattr(torch, args.dtype)
    n_layers = args.layers or 8
    model = build_model(args.preset, torch.device("cuda"), dtype, n_layers)
    d_model = model.config.hidden_size
    layers = [1, n_layers - 2]  # one gated block on each side of the split
    g = torch.Generator().manual_seed(1)
    features = {
        layer: torch.randperm(EXPANSION * d_model, generator=g)[:N_FEATURES].tolist()
        for layer in layers
    }
    saes = {
        layer: random_sae("relu", d_model, 10 + layer, torch.device("cpu"), torch.float32)
        for layer in layers
    }
    input_ids = torch.randint(0, model.config.vocab_size, (2, 64), generator=g)

    def logits(gated: bool, device: str) -> Tensor:
        with torch.inference_mode():
            if not gated:
                return model(input_ids=input_ids.to(device)).logits.float().cpu()
            with SAEGate(model, saes, features, alpha=1.0):
                return model(input_ids=input_ids.to(device)).logits.float().cpu()

    single_gated, single_plain = logits(True, "cuda"), logits(False, "cuda")
    effect = (single_gated - single_plain).abs().max().item()
    half = n_layers // 2
    # embeddings and the (tied) LM head on cuda:0; the second half of the blocks on the CPU
    device_map: dict[str, Any] = {"model.embed_tokens": 0, "model.rotary_emb": 0, "lm_head": 0}
    device_map |= {f"model.layers.{i}": 0 if i < half else "cpu" for i in range(n_layers)}
    device_map["model.norm"] = "cpu"
    # "split": CPU blocks run on the CPU (main_device="cpu"); "offload": the transformers
    # device_map behaviour, CPU blocks are offloaded and run on cuda:0. Offload runs last
    # because it leaves the CPU weights on the meta device.
    for mode, main_device in (("split", "cpu"), ("offload", None)):
        dispatched = dispatch_model(model, device_map=device_map, main_device=main_device)
        placed = {layer: str(block_device(dispatched, layer)) for layer in layers}
        devices = sorted({str(p.device) for p in get_blocks(dispatched).parameters()})
        split_gated, split_plain = logits(True, "cuda:0"), logits(False, "cuda:0")
        err = (split_gated - single_gated).abs().max().item()
        plain_err = (split_plain - single_plain).abs().max().item()
        print(
            f"{mode}: block weights on {devices}, gate plans on {placed}; gated logits "
            f"max |{mode} - single GPU| = {err:.3g} (ungated: {plain_err:.3g}; gate effect "
            f"{effect:.3g})"
        )
        if mode == "split":
            from accelerate.hooks import remove_hook_from_module

            remove_hook_from_module(dispatched, recurse=True)
            model = dispatched.to("cuda")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, default=None, help="override the number of blocks")
    parser.add_argument("--batch", type=int, default=None, help="override the preset's batch size")
    parser.add_argument(
        "--seq", type=int, default=None, help="override the preset's sequence length"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--matmul-precision",
        default="highest",
        choices=["highest", "high"],
        help="torch.set_float32_matmul_precision for the gates' fp32 compute ('high' lets a "
        "GPU use TF32 for it: faster, about 10 mantissa bits)",
    )
    parser.add_argument(
        "--split", action="store_true", help="device_map split across cuda:0 and cpu"
    )
    parser.add_argument(
        "--topk-precision",
        nargs="+",
        default=["auto"],
        choices=["auto", "fp32", "mixed"],
        help="SAEGate topk_precision of the TopK gate variant(s); with several, also checks "
        "that each gives the fp32 gate's logits bit for bit",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    if args.split:
        run_split(args)
    else:
        run_speed(args)


if __name__ == "__main__":
    main()
