"""VPT-shallow (Jia et al., 2022): learnable prompt tokens at the model's prompt sites.

Each module of the ``prompt_site`` role (network order) has ``prompt_width`` and
a ``prompts`` attribute; we set ``prompts = nn.Parameter((p, prompt_width))`` and
the model prepends them to the tokens entering that module and drops them before
tokens are reused (skips, reshape to a volume, decoder).  The paper puts prompts
at the 2nd encoder layer, not the first: UNETR one site with 50 tokens; CVT-GAN
its 2nd and 3rd down-stages with 8 and 32 tokens (``tokens=8/32``: one number per
site, or one number for every site; 0 skips a site).

Prompts are tokens, as published.  The public reference code appends prompt
*channels* instead; we do not.

Init: truncated normal, std 0.02 (ViT token init).  VPT is *not* identity at
init: extra keys and values change every attention output of the site's block
and those after it.  It is not mergeable (prompts stay as parameters).
"""

from __future__ import annotations

import dataclasses
from fnmatch import fnmatchcase
from typing import Any, ClassVar

import torch
from torch import nn

from petite.errors import UserError
from petite.models.contract import role_patterns
from petite.peft.methods.base import Method, MethodConfig

PROMPT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class VPTConfig(MethodConfig):
    """Option ``tokens``: prompt tokens per site (``8/32``) or for every site (``50``);
    empty = each site's own default (``prompt_default_tokens``: the paper's UNETR 50,
    CVT-GAN 8/32 in the encoder and 32/8 in the decoder)."""

    tokens: tuple[int, ...] = ()

    option_kinds: ClassVar[dict[str, str]] = {"tokens": "ints"}

    def __post_init__(self) -> None:
        if any(t < 0 for t in self.tokens) or (self.tokens and not any(self.tokens)):
            raise UserError(f"VPT tokens must be >= 0 and not all 0, got {'/'.join(map(str, self.tokens))}")


def prompt_sites(model: nn.Module, module_names: list[str]) -> list[str]:
    """Prompt-site module names within ``module_names``, in the role's (network) order."""
    scope = set(module_names)
    # Only modules that carry the prompt-site attributes (a loose pattern may match their children).
    names = [n for n, m in model.named_modules() if n in scope and hasattr(m, "prompt_width")]
    out: list[str] = []
    for pattern in role_patterns(model, "prompt_site") if "prompt_site" in getattr(model, "peft_roles", {}) else []:
        out += [n for n in names if n and fnmatchcase(n, pattern) and n not in out]
    return out


class VPT(Method):
    """Prompt tokens at the prompt sites in scope."""

    name = "vpt"
    config_class = VPTConfig
    additive = True

    def is_feasible(self, model: nn.Module, module_names: list[str]) -> bool:
        return bool(prompt_sites(model, module_names))

    def tokens_per_site(self, model: nn.Module, sites: list[str]) -> tuple[int, ...]:
        """Resolve the ``tokens`` option against the sites in scope."""
        cfg: Any = self.config
        tokens = cfg.tokens
        if not tokens:
            return tuple(int(getattr(model.get_submodule(s), "prompt_default_tokens", 8)) for s in sites)
        if len(tokens) == 1:
            tokens = tokens * len(sites)
        if len(tokens) != len(sites):
            raise UserError(
                f"vpt: tokens={'/'.join(map(str, tokens))} gives {len(tokens)} numbers for {len(sites)} prompt sites"
            )
        return tuple(tokens)

    def apply(self, model: nn.Module, module_names: list[str]) -> list[nn.Parameter]:
        sites = prompt_sites(model, module_names)
        if not sites:
            raise UserError("vpt: no prompt sites in scope")
        params: list[nn.Parameter] = []
        for name, p in zip(sites, self.tokens_per_site(model, sites)):
            if p == 0:
                continue
            site = model.get_submodule(name)
            width = int(site.prompt_width)
            ref = next(site.parameters(), None)
            prompts = nn.Parameter(torch.empty(p, width, device=None if ref is None else ref.device,
                                               dtype=None if ref is None else ref.dtype))
            nn.init.trunc_normal_(prompts, std=PROMPT_STD, a=-2 * PROMPT_STD, b=2 * PROMPT_STD)
            site.prompts = prompts
            params.append(prompts)
        return params
