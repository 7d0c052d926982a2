"""The engine's VQGAN side: the canvas as VQGAN latents, and the VQGAN run as the engine's
execution and speed ask (memory layout, the lean pass, checkpointing, compilation, bf16).
`Engine` is one of these with CLIP's guidance and the frame's steps added (engine.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


class Latents:
    """A VQGAN made ready for a render's canvas: pictures to latents and back."""

    def __init__(self, vqgan, settings: Any, laid_out: Sequence[Any] = ()):
        """`settings`: the engine's (EngineSettings); `laid_out`: the other models (CLIPs)
        to lay out in memory with the VQGAN."""
        self.vqgan = vqgan
        self.settings = settings
        self.speed = settings.speed
        self.execution = settings.execution
        self.device = torch.device(settings.device)
        self.decode = self._decoder(laid_out)
        codebook = vqgan.codebook
        # Latents are kept inside the codebook's range, per channel.
        self.z_min = codebook.min(dim=0).values[None, :, None, None]
        self.z_max = codebook.max(dim=0).values[None, :, None, None]
        self.latent_shape = (
            codebook.shape[1],
            settings.height // vqgan.downsample,
            settings.width // vqgan.downsample,
        )

    def _decoder(self, laid_out: Sequence[Any]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The VQGAN's decode as this engine's execution asks: the models laid out in memory
        (the engine owns their layout: a classic engine on the same models lays them back),
        the lean pass, checkpointing, compilation."""
        layout = torch.channels_last if self.execution.channels_last else torch.contiguous_format
        for model in (self.vqgan, *laid_out):
            if isinstance(model, torch.nn.Module):
                model.to(memory_format=layout)
        lean, checkpoint = self.execution.lean_decoder, self.execution.checkpoint
        vqgan = self.vqgan

        def decode(z_q: torch.Tensor) -> torch.Tensor:
            return vqgan.decode(z_q, lean=lean, checkpoint=checkpoint)

        if self.execution.compile:
            return torch.compile(decode, dynamic=False)
        return decode

    def layout(self, image: torch.Tensor) -> torch.Tensor:
        """`image` in the memory layout the models are in."""
        if self.execution.channels_last and image.dim() == 4:
            return image.contiguous(memory_format=torch.channels_last)
        return image

    def vqgan_precision(self):
        """The context the VQGAN runs in: bf16 autocast when the speed options ask for it.
        Only around the VQGAN: the nearest-code search and CLIP stay in fp32, where bf16
        gained nothing and would blur the distances the loss is made of."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.speed.bf16)

    def random_latent(self, generator: torch.Generator) -> torch.Tensor:
        codebook = self.vqgan.codebook
        channels, rows, cols = self.latent_shape
        indices = torch.randint(
            codebook.shape[0], (rows * cols,), generator=generator, device=generator.device
        )
        z = codebook[indices.to(codebook.device)].reshape(1, rows, cols, channels)
        return z.permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def image_to_latent(self, image: torch.Tensor) -> torch.Tensor:
        with self.vqgan_precision():
            return self.vqgan.encode(self.layout(image * 2 - 1)).float().contiguous()

    def latent_to_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (quantised with a straight-through gradient) to an image in [0, 1]."""
        z_q = self.layout(self.vqgan.quantize_st(z))
        with self.vqgan_precision():
            image = self.decode(z_q)
        return image.float().add(1).div(2).clamp(0, 1).contiguous()
