"""Train a small DiffusionGemma on train/tasks.py and train/infill_tasks.py with transformers'
DiffusionGemma classes, on CPU.

Objective (DiffusionGemma fine-tuning), per example: the prompt and the answer canvases before the target
canvas run through the encoder (causal, fills the KV cache); the target canvas (C tokens of answer, then
END_OF_TURN, then <pad>) is corrupted with uniform-state noise at a level t ~ U(0.001, 1) and the decoder
predicts the clean canvas from it, reading that cache. Loss = decoder cross-entropy over the whole canvas
+ the encoder's next-token cross-entropy (its last position predicts the canvas' first token). Half of the
examples are self-conditioned on the logits of a first, gradient-free decoder pass.

Infill units (units.py, infill_tasks.py) hold holes and fixed text in the canvas, as dgemma lays them
out: only hole positions are noised and only they enter the decoder loss (fixed positions are never
noised at inference, and copying a clean input would only dilute the loss).

Batches group examples by encoder length, so no padding or attention masks are needed. Everything random
is a function of (seed, step), so a resumed run continues exactly. Checkpoints (every --ckpt-minutes):
out/ckpt.pt (model + optimizer + step) and out/latest/ (a Hugging Face directory); out/final/ at the end.
--init-from MODEL.gguf starts from a GGUF's weights (fine-tuning; optimizer and schedule start fresh).
Usage: nice -n 19 python train/train.py [--steps N] [--resume] [--init-from MODEL.gguf]
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

import infill_tasks
import tokenizer as tok
from tasks import END_OF_TURN, train_set
from units import generation_units, infill_units

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


def encode_pool(sp, a):
    """Every unit: tasks.py answers, infill documents written whole, infill documents with holes,
    one-word holes over tasks.py answers. Their counts set the mix (batches draw units uniformly)."""
    examples = train_set(a.examples)
    docs = infill_tasks.train_documents(a.documents)
    return (generation_units(sp, examples, a.canvas)
            + generation_units(sp, [(d.task, d.prompt, d.text) for d in docs[:a.documents_whole]], a.canvas)
            + infill_units(sp, docs, infill_tasks.word_holes(examples[:a.word_holes], a.seed), a.canvas, a.seed))


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
        enc, canvas, free = zip(*(bucket[i] for i in pick))
        return torch.tensor(enc), torch.tensor(canvas), torch.tensor(free)  # [B, L], [B, C], [B, C]


def softcap(logits, cap):
    return cap * torch.tanh(logits.float() / cap)


def loss_fn(model, enc_ids, canvas, free, gen):
    """enc_ids [B, L] prompt (+ earlier canvases), canvas [B, C] clean target, free [B, C] positions to
    denoise (the others are fixed text) -> (total, decoder, encoder) losses."""
    (B, L), C = enc_ids.shape, canvas.shape[1]
    V, cap = model.config.text_config.vocab_size, model.config.text_config.final_logit_softcapping
    t = torch.empty(B, 1).uniform_(0.001, 1.0, generator=gen)                      # [B, 1] corruption level
    noised = (torch.rand(B, C, generator=gen) < t) & free
    noisy = torch.where(noised, torch.randint(0, V, (B, C), generator=gen), canvas)
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
    dec_loss = F.cross_entropy(logits[free], canvas[free])
    return dec_loss + enc_loss, dec_loss, enc_loss


def init_from_gguf(model, path):
    """Loads a GGUF's weights (tests/reference.py's loader, the gguf package as reader) and checks
    that the model's decoder logits equal dgemma's on one prompt and canvas."""
    import sys

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import dgemma
    from reference import load_weights_from_gguf

    load_weights_from_gguf(model, path)
    with dgemma.Model(path, threads=1) as m:
        ids = m.tokenizer.encode(m.tokenizer.apply_chat_template([{"role": "user", "content": "Copy: red green"}]))
        canvas = np.random.default_rng(0).integers(0, m.config.n_vocab, m.config.canvas_length)
        with m.session() as s:
            s.prefill(ids)
            ours = s.denoise(canvas)
    model.eval()
    with torch.no_grad():
        cache = DynamicCache(config=model.config.text_config)
        model.model.encoder(input_ids=torch.tensor([ids]), cache=cache)
        ref = model(decoder_input_ids=torch.tensor([canvas]), cache=cache,
                    decoder_position_ids=torch.arange(len(ids), len(ids) + len(canvas))[None]).logits[0].numpy()
    model.train()
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    if not err <= 1e-4:
        raise SystemExit(f"{path}: the loaded weights do not reproduce dgemma's logits (relative error {err:.2e})")
    print(f"# init from {path}: logits equal dgemma's (relative error {err:.1e})", flush=True)


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
    ap.add_argument("--examples", type=int, default=100_000, help="tasks.py examples")
    ap.add_argument("--documents", type=int, default=60_000, help="infill_tasks documents, with holes")
    ap.add_argument("--documents-whole", type=int, default=20_000, help="of them, also written whole")
    ap.add_argument("--word-holes", type=int, default=30_000, help="tasks.py examples also cut into word holes")
    ap.add_argument("--init-from", help="a GGUF of this architecture (the shipped demo model) to fine-tune")
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
    if a.init_from and not a.resume:
        init_from_gguf(model, a.init_from)
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
    batches = Batches(encode_pool(sp, a), a.batch, a.seed)

    def checkpoint():
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        save_hf(model, sp_path, sp, os.path.join(a.out, "latest"))
        say(f"# checkpoint step {step}")

    t0 = last_ckpt = time.time()
    sums = np.zeros(3)
    while step < a.steps:
        enc_ids, canvas, free = batches(step)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        losses = loss_fn(model, enc_ids, canvas, free, gen)
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
