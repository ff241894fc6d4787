"""Train a small DiffusionGemma on train/tasks.py with transformers' DiffusionGemma classes, on CPU.

Objective (DiffusionGemma fine-tuning), per example: the prompt and the answer canvases before the target
canvas run through the encoder (causal, fills the KV cache); the target canvas (C tokens of answer, then
END_OF_TURN, then <pad>) is corrupted with uniform-state noise at a level t ~ U(0.001, 1) and the decoder
predicts the clean canvas from it, reading that cache. Loss = decoder cross-entropy over the whole canvas
+ the encoder's next-token cross-entropy (its last position predicts the canvas' first token). Half of the
examples are self-conditioned on the logits of a first, gradient-free decoder pass.

Batches group examples by encoder length, so no padding or attention masks are needed. Everything random
is a function of (seed, step), so a resumed run continues exactly. Checkpoints (every --ckpt-minutes):
out/ckpt.pt (model + optimizer + step) and out/latest/ (a Hugging Face directory); out/final/ at the end.
Usage: nice -n 19 python train/train.py [--steps N] [--resume]
"""
import argparse
import math
import os
import shutil
import time

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig, EntropyBoundSamplerConfig)

import tokenizer as tok
from tasks import END_OF_TURN, render_prompt, train_set

HERE = os.path.dirname(os.path.abspath(__file__))
TINY_VISION = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=1, num_key_value_heads=1, head_dim=16, position_embedding_size=64)


def make_config(vocab_size, canvas):
    text = dict(vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64,
                num_global_key_value_heads=1, sliding_window=64, num_experts=8, top_k_experts=2,
                moe_intermediate_size=64, max_position_embeddings=1024, pad_token_id=0, eos_token_id=1,
                bos_token_id=2)
    return DiffusionGemmaConfig(text_config=text, vision_config=TINY_VISION, canvas_length=canvas)


def generation_config(sp):
    """The contract's sampler defaults; EOS is <eos> or END_OF_TURN, the model's end of turn."""
    return DiffusionGemmaGenerationConfig(
        max_new_tokens=128, max_denoising_steps=48, sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.1),
        t_min=0.4, t_max=0.8, stability_threshold=1, confidence_threshold=0.005,
        bos_token_id=sp.bos_id(), pad_token_id=sp.pad_id(), eos_token_id=[sp.eos_id(), sp.piece_to_id(END_OF_TURN)])


def encode_pool(sp, n, canvas):
    """-> list of (encoder ids, clean target canvas) units, one per (example, answer canvas) pair."""
    units = []
    for _, p, a in train_set(n):
        prompt = [sp.bos_id()] + sp.encode(render_prompt(p))
        ans = sp.encode(a + END_OF_TURN)
        for k in range(math.ceil(len(ans) / canvas)):
            target = ans[k * canvas:(k + 1) * canvas]
            units.append((prompt + ans[:k * canvas], target + [sp.pad_id()] * (canvas - len(target))))
    return units


class Batches:
    """Units bucketed by encoder length; batch(step) is a pure function of (seed, step)."""

    def __init__(self, units, batch_size, seed):
        buckets = {}
        for u in units:
            buckets.setdefault(len(u[0]), []).append(u)
        self.buckets = list(buckets.values())
        sizes = np.array([len(b) for b in self.buckets], dtype=np.float64)
        self.p, self.batch_size, self.seed = sizes / sizes.sum(), batch_size, seed

    def __call__(self, step):
        rng = np.random.default_rng([self.seed, step])
        bucket = self.buckets[rng.choice(len(self.buckets), p=self.p)]
        pick = rng.choice(len(bucket), size=min(self.batch_size, len(bucket)), replace=False)
        enc, canvas = zip(*(bucket[i] for i in pick))
        return torch.tensor(enc), torch.tensor(canvas)  # [B, L], [B, C]


def softcap(logits, cap):
    return cap * torch.tanh(logits.float() / cap)


def loss_fn(model, enc_ids, canvas, gen):
    """enc_ids [B, L] prompt (+ earlier canvases), canvas [B, C] clean target -> (total, decoder, encoder) losses."""
    (B, L), C = enc_ids.shape, canvas.shape[1]
    V, cap = model.config.text_config.vocab_size, model.config.text_config.final_logit_softcapping
    t = torch.empty(B, 1).uniform_(0.001, 1.0, generator=gen)                      # [B, 1] corruption level
    noisy = torch.where(torch.rand(B, C, generator=gen) < t, torch.randint(0, V, (B, C), generator=gen), canvas)
    sc_mask = torch.rand(B, generator=gen) < 0.5                                   # [B] self-conditioned rows

    cache = DynamicCache(config=model.config.text_config)
    hidden = model.model.encoder(input_ids=enc_ids, cache=cache).last_hidden_state  # [B, L, H], fills cache
    enc_logits = softcap(model.lm_head(hidden), cap)                                # [B, L, V]
    enc_targets = torch.cat([enc_ids[:, 1:], canvas[:, :1]], dim=1)                 # [B, L] next tokens
    enc_loss = F.cross_entropy(enc_logits.flatten(0, 1), enc_targets.flatten())

    positions = torch.arange(L, L + C)[None]                                       # [1, C]
    sc_logits = None
    if sc_mask.any():
        with torch.no_grad():
            sc_logits = model(decoder_input_ids=noisy, cache=cache, decoder_position_ids=positions).logits
    logits = model(decoder_input_ids=noisy, cache=cache, decoder_position_ids=positions,
                   self_conditioning_logits=sc_logits, self_conditioning_mask=sc_mask).logits  # [B, C, V]
    dec_loss = F.cross_entropy(logits.flatten(0, 1), canvas.flatten())
    return dec_loss + enc_loss, dec_loss, enc_loss


def save_hf(model, sp_path, sp, path):
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.generation_config = generation_config(sp)
    model.save_pretrained(tmp)
    shutil.copy(sp_path, os.path.join(tmp, "tokenizer.model"))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--steps", type=int, default=7000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--canvas", type=int, default=32)
    ap.add_argument("--examples", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    sp_path = os.path.join(a.out, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=sp_path) if os.path.exists(sp_path) else tok.train(sp_path, 960)

    torch.manual_seed(a.seed)
    model = DiffusionGemmaForBlockDiffusion(make_config(sp.get_piece_size(), a.canvas)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / a.steps)))))
    step, ckpt = 0, os.path.join(a.out, "ckpt.pt")
    if a.resume and os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
    n_text = sum(p.numel() for n, p in model.named_parameters() if "vision" not in n)
    log = open(os.path.join(a.out, "train.log"), "a")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    say(f"# start step {step}/{a.steps}, text params {n_text}, args {vars(a)}")
    batches = Batches(encode_pool(sp, a.examples, a.canvas), a.batch, a.seed)

    def checkpoint():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        save_hf(model, sp_path, sp, os.path.join(a.out, "latest"))
        say(f"# checkpoint step {step}")

    t0 = last_ckpt = time.time()
    sums = np.zeros(3)
    while step < a.steps:
        enc_ids, canvas = batches(step)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        losses = loss_fn(model, enc_ids, canvas, gen)
        opt.zero_grad(set_to_none=True)
        losses[0].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        sums += [x.item() for x in losses]
        if step % a.log_every == 0:
            l, d, e = sums / a.log_every
            say(f"step {step} loss {l:.4f} dec {d:.4f} enc {e:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"elapsed {time.time() - t0:.0f}s")
            sums[:] = 0
        if time.time() - last_ckpt > a.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    save_hf(model, sp_path, sp, os.path.join(a.out, "final"))
    say("# done: final model in " + os.path.join(a.out, "final"))


if __name__ == "__main__":
    main()
