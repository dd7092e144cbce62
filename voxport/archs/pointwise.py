"""Kernel-1 Conv1d layers exported as MatMul, so that 8-bit files get onnxruntime's integer MatMul.

A 1x1 Conv1d over [batch, channels, time] is a matrix product per frame. onnxruntime quantizes a Conv
dynamically into ConvInteger (im2col, no packed weights: 0.74-0.82x fp32 on a C=1024 ECAPA), a MatMul into
DynamicQuantizeLinear + MatMulInteger, which it fuses into DynamicQuantizeMatMul with the weights packed once for
int8 dot-product instructions (0.48-0.53x fp32, AMD EPYC with AVX512-VNNI, 2 threads). In float the two forms
run at the same speed (1.00x at 0.75 s and 3 s), so the fp32 file carries the MatMul form too and every file
made from it shares its node names.
"""
from __future__ import annotations

import copy


def pointwise_as_matmul(module, skip=lambda name: False):
    """A copy of `module` whose kernel-1, ungrouped, unpadded, stride-1 Conv1d layers compute
    (x^T W^T + b)^T with the same weights, but those whose qualified name `skip` accepts (layers that see one
    frame, e.g. squeeze-excitation on pooled vectors: nothing to gain, and onnxsim rewrites their MatMul as
    Reshape + Gemm + Reshape). Returns (copy, how many replaced)."""
    import torch
    import torch.nn as nn

    class PointwiseMatMul(nn.Module):
        def __init__(self, conv: nn.Conv1d):
            super().__init__()
            # [in, out]: the layout of a MatMul's second input, the one onnxruntime's quantizers pack
            self.weight_t = nn.Parameter(conv.weight.detach()[:, :, 0].t().contiguous(), requires_grad=False)
            self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

        def forward(self, x):
            y = torch.matmul(x.transpose(1, 2), self.weight_t).transpose(1, 2)
            # the bias after the transpose: added to the product directly, the exporter may fuse the two into a Gemm,
            # which onnxruntime's dynamic quantizer does not take
            return y if self.bias is None else y + self.bias[:, None]

    def pointwise(m) -> bool:
        return (isinstance(m, nn.Conv1d) and m.kernel_size == (1,) and m.groups == 1 and m.stride == (1,)
                and m.padding in ((0,), "valid") and m.padding_mode == "zeros")

    out = copy.deepcopy(module)
    replaced = 0
    for prefix, parent in list(out.named_modules()):
        for name, child in list(parent.named_children()):
            if pointwise(child) and not skip(f"{prefix}.{name}" if prefix else name):
                setattr(parent, name, PointwiseMatMul(child))
                replaced += 1
    return out, replaced
