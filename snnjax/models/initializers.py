"""Initializers of the study (PyTorch conventions, as its code release used).

* conv and dense kernels: Kaiming-normal with fan_out, ``N(0, 2 / fan_out)`` untruncated, where
  fan_out = out_features for a dense (in, out) kernel and kh * kw * out_channels for a conv
  (kh, kw, in, out) kernel (``torch.nn.init.kaiming_normal_(mode="fan_out")``);
* the classifier ``head``: kernel ``N(0, 0.01^2)``, bias 0;
* biases 0; BatchNorm scale 1, bias 0 (flax defaults).
"""

from flax import linen as nn

kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
head_kernel_init = nn.initializers.normal(stddev=0.01)
zeros = nn.initializers.zeros

# PyTorch BatchNorm defaults: running stats updated as 0.9 * old + 0.1 * batch, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def head(num_classes: int) -> nn.Dense:
  """The classifier layer: a Dense named ``head`` with bias, initialized N(0, 0.01^2) / 0."""
  return nn.Dense(num_classes, kernel_init=head_kernel_init, bias_init=zeros, name="head")
