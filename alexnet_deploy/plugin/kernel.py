"""The one Triton LRN kernel: used by the torch runner on CUDA (``lrn_triton``), compiled
ahead of time into TensorRT engines by ``registration``, and run by the tests in Triton's
CPU interpreter (``TRITON_INTERPRET=1``).

Maths: :mod:`alexnet_deploy.lrn` (ONNX ``LRN``, alpha divided by size, window
``[c - floor((size-1)/2), c + ceil((size-1)/2)]``, even sizes included). Input and
output are contiguous NCHW, float32 or float16; squares are summed in float32 because
x**2 overflows float16 above |x| ~ 256.

Why the kernel looks like this (LRN is memory-bound, its floor is one read and one
write of the activation):

* Work split. A program owns ``BLOCK`` (image, pixel) positions -- N and H*W flattened,
  so AlexNet's odd 55*55 and 27*27 planes leave no half-empty tiles -- and a chunk of
  ``CHANNELS_PER_PROGRAM`` output channels, which it walks in order. For a fixed channel
  neighbouring lanes read neighbouring addresses, so every load and store is coalesced.
  Splitting channels into chunks multiplies the number of programs (conv2's 128x729
  positions alone would not fill an H100) at the price of re-reading the
  ``size - 1`` halo channels of each chunk, which neighbouring chunks (adjacent program
  ids, hence running at the same time) have just pulled into L2.
* Each input element is read from memory once (plus each chunk's ``size - 1`` halo
  rows). The rows around the current channel live in registers as a ring (a Triton
  tuple carried through the channel loop): moving to the next channel drops the oldest
  row and appends one new load. The window sum is recomputed from the ring at every
  step -- ``size`` FMAs per element, free for a memory-bound kernel -- which avoids the
  drift and cancellation of a running add-and-subtract sum.
* Loads run ``LOOKAHEAD`` channels ahead of the compute: the row for channel
  ``c + after + LOOKAHEAD`` is requested while channel ``c`` is computed and only used
  ``LOOKAHEAD`` iterations later, so every thread keeps that many independent loads in
  flight instead of stalling on each one. That memory-level parallelism is what
  bandwidth needs, and it does not depend on the compiler's software pipeliner.

TensorRT's AOT plugin launches a PTX kernel with the input pointers, then integer
"extra args", then the output pointers; the kernel's parameter order is therefore
(x, extra ints..., y), and everything that is not an integer shape (size, alpha, beta,
bias, tile sizes) is a compile-time constant. ``registration`` builds its launch from
``KernelConfig``/``TACTICS`` and its PTX with ``compile_ptx``, so an engine runs exactly
the kernel, grid and constants tested here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..lrn import LRNParams

# The integer arguments between the input and output pointers, in order; TensorRT's AOT
# launch passes them as symbolic expressions (see registration.aot_impl).
EXTRA_INT_ARGS = ("channels", "plane", "positions")


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch shape, shared by the torch launch and the TensorRT AOT launch."""

    block: int = 512  # (image, pixel) positions per program; power of two
    channels_per_program: int = 32  # output channels one program walks through
    lookahead: int = 4  # loads in flight per thread (ring rows beyond the window)
    num_warps: int = 4

    def grid(self, batch: int, channels: int, plane: int) -> tuple[int]:
        """One axis of (channel chunks x position tiles) programs, chunk fastest: the
        programs sharing halo channels run side by side, so halo re-reads hit L2. One
        axis because CUDA caps grid y and z at 65535 and the x axis at 2**31 - 1."""
        return (program_count(channels, batch * plane, self),)


DEFAULT_CONFIG = KernelConfig()

# Variants TensorRT may time against each other at build time (plugin tactics must be
# positive integers); the engine keeps the fastest. The micro-benchmark times the same
# set, so a GPU run shows which one wins and by how much.
TACTICS: dict[int, KernelConfig] = {
    1: DEFAULT_CONFIG,
    2: KernelConfig(block=256, channels_per_program=16, lookahead=8),
    3: KernelConfig(block=1024, channels_per_program=32, lookahead=2, num_warps=8),
}


def kernel_int_args(batch, channels, height, width) -> tuple:
    """Values of ``EXTRA_INT_ARGS`` for an NCHW shape. Plain arithmetic, so it serves
    Python ints (torch launch) and TensorRT's symbolic shape expressions (AOT launch)."""
    plane = height * width
    return channels, plane, batch * plane


def program_count(channels, positions, config: KernelConfig, cdiv=triton.cdiv):
    """Programs in the one-axis grid: channel chunks x position tiles. ``cdiv`` is
    ``triton.cdiv`` for ints and ``tensorrt.plugin.cdiv`` for symbolic shapes."""
    return cdiv(channels, config.channels_per_program) * cdiv(positions, config.block)


@triton.jit
def _row_mask(in_range, row, row_end):
    # Written as a select on the scalar row test rather than ``in_range & (row >= 0)``:
    # Triton's interpreter turns a scalar-and-block ``&`` into an int32 mask it then
    # rejects; the select means the same thing on the GPU.
    return tl.where((row >= 0) & (row < row_end), in_range, False)


@triton.jit
def lrn_kernel(
    x_ptr,
    channels,
    plane,
    positions,
    y_ptr,
    SIZE: tl.constexpr,
    BEFORE: tl.constexpr,
    ALPHA_OVER_SIZE: tl.constexpr,
    BETA: tl.constexpr,
    BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
    CHANNELS_PER_PROGRAM: tl.constexpr,
    LOOKAHEAD: tl.constexpr,
):
    # The ring holds rows c - BEFORE .. c + AFTER + LOOKAHEAD - 1 while channel c is
    # computed: indices 0..SIZE-1 are the window, the rest rows already on their way.
    AFTER: tl.constexpr = SIZE - 1 - BEFORE
    RING: tl.constexpr = SIZE + LOOKAHEAD - 1

    chunks = tl.cdiv(channels, CHANNELS_PER_PROGRAM)
    c_first = (tl.program_id(0) % chunks) * CHANNELS_PER_PROGRAM
    c_last = tl.minimum(c_first + CHANNELS_PER_PROGRAM, channels)
    # Last row any window of this chunk touches; masked loads past it cost no traffic.
    row_end = tl.minimum(c_last + AFTER, channels)
    position = (tl.program_id(0) // chunks) * BLOCK + tl.arange(0, BLOCK)
    in_range = position < positions
    image = position // plane
    # int64 offsets: a large batch of large planes passes 2**31 elements.
    base = image.to(tl.int64) * channels * plane + (position - image * plane)

    # Prologue. Rows outside [0, channels) read as zeros, which is exactly the
    # specification's "channels outside the range are skipped".
    ring = ()
    for i in tl.static_range(RING):
        row = c_first - BEFORE + i
        row_values = tl.load(x_ptr + base + row * plane, mask=_row_mask(in_range, row, row_end), other=0.0)
        ring = ring + (row_values.to(tl.float32),)

    for c in range(c_first, c_last):
        # Issued now, consumed LOOKAHEAD iterations later: the loads overlap the compute.
        ahead = c + AFTER + LOOKAHEAD
        incoming = tl.load(x_ptr + base + ahead * plane, mask=_row_mask(in_range, ahead, row_end), other=0.0)
        square_sum = tl.zeros([BLOCK], dtype=tl.float32)
        for i in tl.static_range(SIZE):
            square_sum += ring[i] * ring[i]
        # (bias + alpha/size * S) ** -beta via exp2/log2: the base is >= bias > 0.
        scale = tl.exp2(-BETA * tl.log2(BIAS + ALPHA_OVER_SIZE * square_sum))
        out = ring[BEFORE] * scale
        tl.store(y_ptr + base + c * plane, out.to(y_ptr.dtype.element_ty), mask=in_range)
        ring = ring[1:] + (incoming.to(tl.float32),)


def kernel_constants(params: LRNParams, config: KernelConfig = DEFAULT_CONFIG) -> dict[str, int | float]:
    """Compile-time constants of ``lrn_kernel`` for these LRN hyper-parameters."""
    if params.size < 1:
        raise ValueError(f"LRN size must be >= 1, got {params.size}")
    if config.lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {config.lookahead}")
    if params.bias <= 0:
        # the exp2/log2 power needs a positive base; AlexNet's k is 2
        raise ValueError(f"the Triton LRN kernel needs bias > 0, got {params.bias}")
    return {
        "SIZE": params.size,
        "BEFORE": params.window_before,
        "ALPHA_OVER_SIZE": params.alpha / params.size,
        "BETA": params.beta,
        "BIAS": params.bias,
        "BLOCK": config.block,
        "CHANNELS_PER_PROGRAM": config.channels_per_program,
        "LOOKAHEAD": config.lookahead,
    }


def compile_options(config: KernelConfig = DEFAULT_CONFIG) -> dict[str, int | bool]:
    """Triton compile options, the same for the torch launch and the TensorRT AOT compile.
    FMA contraction is named explicitly because Triton 3.10 turns its default off; with it
    both paths run the same instructions, so results agree bit for bit."""
    return {"num_warps": config.num_warps, "enable_fp_fusion": True}


def kernel_signature(dtype: str) -> dict[str, str]:
    """Triton signature of the runtime arguments for ``triton.compile`` (``dtype`` is
    ``"fp32"`` or ``"fp16"``): input pointer, ``EXTRA_INT_ARGS`` as i32, output pointer."""
    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"the LRN kernel takes fp32 or fp16, not {dtype}")
    return {"x_ptr": f"*{dtype}", **dict.fromkeys(EXTRA_INT_ARGS, "i32"), "y_ptr": f"*{dtype}"}


def lrn_triton(x: torch.Tensor, params: LRNParams = LRNParams(), config: KernelConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """LRN of a contiguous NCHW float32/float16 tensor with the Triton kernel.

    Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before
    triton was first imported.
    """
    if x.dim() != 4:
        raise ValueError(f"LRN expects an NCHW tensor, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"the LRN kernel takes float32 or float16, not {x.dtype}")
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    batch, channels, height, width = x.shape
    grid = config.grid(batch, channels, height * width)
    int_args = kernel_int_args(batch, channels, height, width)
    lrn_kernel[grid](x, *int_args, y, **kernel_constants(params, config), **compile_options(config))
    return y


@dataclass(frozen=True)
class CompiledKernel:
    """What TensorRT's AOT plugin needs to embed and launch the kernel."""

    name: str
    ptx: str
    threads_per_block: int
    shared_mem: int


_PTX_VERSION = re.compile(r"^\.version (\d+)\.(\d+)", re.MULTILINE)


def ptx_isa_version(ptx: str) -> int:
    """The ``.version`` a PTX module declares, as Triton spells it (8.5 -> 85)."""
    match = _PTX_VERSION.search(ptx)
    if match is None:
        raise ValueError("no .version directive in the PTX")
    return int(match.group(1)) * 10 + int(match.group(2))


def compile_ptx(
    dtype: str,
    params: LRNParams,
    capability: int,
    max_ptx_version: int | None = None,
    config: KernelConfig = DEFAULT_CONFIG,
) -> CompiledKernel:
    """Compile ``lrn_kernel`` to PTX for an sm_``capability`` GPU, as TensorRT's AOT
    plugin embeds it in the engine. Needs no GPU.

    Triton stamps the PTX with the ISA of the ptxas it bundles, which can be newer than
    the installed driver; the driver then refuses to JIT it when TensorRT loads the
    engine. ``max_ptx_version`` (the driver's newest ISA, see ``cuda_driver``) lowers the
    stamp; the kernel uses no recent PTX feature, so any ISA >= 8.0 expresses it.
    """
    from triton.backends.compiler import GPUTarget

    source = triton.compiler.ASTSource(
        fn=lrn_kernel, signature=kernel_signature(dtype), constexprs=kernel_constants(params, config)
    )
    target = GPUTarget("cuda", capability, 32)
    options = compile_options(config)
    compiled = triton.compile(source, target=target, options=options)
    if max_ptx_version is not None and ptx_isa_version(compiled.asm["ptx"]) > max_ptx_version:
        compiled = triton.compile(source, target=target, options={**options, "ptx_version": max_ptx_version})
    metadata = compiled.metadata
    if getattr(metadata, "global_scratch_size", 0) or getattr(metadata, "profile_scratch_size", 0):
        # TensorRT passes only (inputs, extra args, outputs); a kernel that needs Triton's
        # scratch buffers would read whatever follows. Ours needs none -- keep it that way.
        raise RuntimeError("the LRN kernel unexpectedly needs Triton scratch memory; TensorRT cannot provide it")
    ptx = strip_unused_trailing_params(compiled.asm["ptx"], metadata.name, len(TENSORRT_LAUNCH_PARAMS))
    return CompiledKernel(metadata.name, ptx, metadata.num_warps * 32, metadata.shared)


# What TensorRT's AOT launch passes, in order: the input pointer, the extra int args, the
# output pointer (PTX types). The PTX entry must declare exactly these.
TENSORRT_LAUNCH_PARAMS = (".u64", *(".u32" for _ in EXTRA_INT_ARGS), ".u64")

_ENTRY = re.compile(r"\.entry\s+(?P<name>[\w$]+)\s*\((?P<params>[^)]*)\)", re.MULTILINE)
_PARAM = re.compile(r"\.param\s+(?P<type>\.[us]\d+|\.b\d+|\.f\d+)[^,]*?\s(?P<name>[\w$]+)\s*$")


@dataclass(frozen=True)
class PtxParam:
    type: str  # ".u64", ".u32", ...
    name: str


def ptx_entry_params(ptx: str, kernel_name: str) -> list[PtxParam]:
    """The parameters the PTX ``.entry`` of ``kernel_name`` declares, in order."""
    for match in _ENTRY.finditer(ptx):
        if match.group("name") == kernel_name:
            declarations = [part.strip() for part in match.group("params").split(",") if part.strip()]
            params = []
            for declaration in declarations:
                parsed = _PARAM.search(declaration)
                if parsed is None:
                    raise ValueError(f"unrecognised PTX parameter declaration {declaration!r}")
                params.append(PtxParam(parsed.group("type"), parsed.group("name")))
            return params
    raise ValueError(f"no .entry {kernel_name} in the PTX")


def strip_unused_trailing_params(ptx: str, kernel_name: str, keep: int) -> str:
    """Drop the entry parameters after the first ``keep`` when the kernel body never reads them.

    Why: Triton >= 3.3 appends its own ``global_scratch`` (and >= 3.5 ``profile_scratch``)
    pointer parameters to every kernel, and no compile option turns that off. TensorRT's
    AOT launch passes only (inputs, extra args, outputs), so an entry declaring more
    parameters than TensorRT passes has undefined trailing arguments. Removing a parameter
    is safe exactly when no instruction references it, which is checked here; a kernel
    that did read one (it would need scratch memory) is refused instead.
    """
    params = ptx_entry_params(ptx, kernel_name)
    if len(params) < keep:
        raise RuntimeError(f"{kernel_name} declares {len(params)} parameters, fewer than the {keep} TensorRT passes")
    extra = params[keep:]
    if not extra:
        return ptx
    entry = next(m for m in _ENTRY.finditer(ptx) if m.group("name") == kernel_name)
    body = ptx[: entry.start()] + ptx[entry.end() :]
    used = [param.name for param in extra if re.search(rf"\b{re.escape(param.name)}\b", body)]
    if used:
        raise RuntimeError(f"{kernel_name} reads Triton's extra parameters {used}; TensorRT cannot provide them")
    kept = ",\n".join(_declaration(entry, param) for param in params[:keep])
    return ptx[: entry.start()] + f".entry {kernel_name}(\n{kept}\n)" + ptx[entry.end() :]


def _declaration(entry: re.Match, param: PtxParam) -> str:
    """The original declaration line of ``param`` (type qualifiers such as ``.ptr .global`` kept)."""
    for part in entry.group("params").split(","):
        if re.search(rf"\b{re.escape(param.name)}\s*$", part.strip()):
            return "\t" + part.strip()
    raise ValueError(f"parameter {param.name} not found")
