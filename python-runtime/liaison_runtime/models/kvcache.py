"""Cached decoding for the GPT model, with the KV hook that decides which tokens stay.

Per attention layer the cache is a fixed buffer of `cap` slots per (batch row b, head h),
allocated once: keys and values (B, H, cap, D) (kvstore.py: as they are, or quantized),
`pos` (B, H, cap) i64 the absolute position of the token in each slot (-1: empty), and
the policy's per-token state (B, H, cap) f32. A new token is written into one slot per
(b, h); eviction only frees slots (pos := -1), so nothing is concatenated or re-gathered
per step. The layer's hook (if any) is called as

    scores, *new_state = hook([keys, values, attn, pos, *state])

over the slots in use (the buffer's first w slots: w grows while the buffer fills, then is
`cap`); attn (B, H, R, w) is the softmax attention of the R newest queries, oldest first.

When it fires: once after the prompt (R = min(T0, history) rows), then only when its
scores are needed, with the attention row of every step since its last fire. Each decoding
step writes its query's row (B, H, 1, w) into a per-layer row buffer (B, H, rows, cap)
(in place; columns past the w of that step stay zero, as w never shrinks), and the hook
fires when (a) a row holds `budget` tokens and a next token is coming, so it must drop
`evict` of them first (done right after the fire, from its scores), or (b) the buffer holds
`rows` rows, so that a policy that never evicts still sees every row and its state stays
current. After a fire the buffer is empty. rows = min(evict, ROWS) for a budgeted cache:
once it is full a fire comes every `evict` steps anyway (more rows would be memory never
used); ROWS for budget null, and none at all for a hook with neither a budget nor state (it
fires at the prefill only: nothing could use its later scores). The row buffer is the
hook's working memory ((B, H, rows, cap): the model's dtype, f16 beside quantized entries)
beside the cache, so rows are also capped at what keeps it within 1/ROW_SHARE of the cache's
bytes (at least MIN_ROWS): at 4 bits a token's entries are ~1/7 of their f32 size, and 32
f32 rows would outweigh the cache they serve. kv_cache_size reports it apart from the
cache's bytes.

Why this equals firing at every step, for a policy whose update over R rows is exact (as
the prefill already demands: an accumulated sum, a count decayed by age): between two
fires no slot is freed (evictions happen only right after a fire), so every buffered row's
column j is the attention its query paid the token in slot j now, or 0 where slot j was
empty or not yet in use when the row was made; and a token written after row i's query has
a larger position, so the rule "row i is the query at p_max - R + 1 + i and sees the slots
at positions <= its own" (base.ts `visible()`) excludes it there. The R rows are the same
rows, over the same tokens, that R fires would have seen one by one; the scores of the
last are the ones an eviction uses. (Decoder._fire_every_step restores per-step firing:
the tests' reference.) The program's dispatch (some 20-30 ops of 15-20 us each, per layer)
is then paid once per `evict` steps instead of every step.

Rotary models with positions 'cache' (StreamingLLM) number the kept tokens 0..n-1 in order
of their original position. Their keys are stored unrotated and turned to their rank when
read (one rotation of the slots in use per step, what the attention reads anyway); an
eviction only lowers the ranks behind the tokens it drops. Turning stored keys at each
eviction instead would re-encode quantized keys every time, and their rounding error would
grow with every eviction a token lives through (at 4 bits, past the keys' own size within a
hundred evictions). The rank of each slot is kept beside `pos`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import RuntimeFault
from . import kvstore as st
from .gpt import GPT
from .rope import apply_rope, cos_sin, turn

ROWS = 64  # the most decoding steps' attention rows a hook is given at once
ROW_SHARE = 8  # the row buffer holds at most 1/ROW_SHARE of the cache's bytes ...
MIN_ROWS = 4  # ... or MIN_ROWS rows (below that, dispatch would cost more than memory saves)


@dataclass
class KVHook:
    hook: object  # callable(list[Tensor]) -> list[Tensor]
    budget: int | None  # None: never evict
    state: list[float]  # init value of each per-token state tensor
    evict: int = 1
    history: int | None = None  # prefill attention rows passed (None: all)
    positions: str = "original"  # or 'cache' (rotary models)
    bits: int = 32
    group: int = 32


class LayerCache:
    """One attention layer's slot buffer."""

    def __init__(self, spec: KVHook | None, b: int, h: int, cap: int, d: int, dtype, device, rope_base: float,
                 rows: int):
        self.spec, self.cap = spec, cap
        self.bits = spec.bits if spec else 32
        self.group = spec.group if spec else d
        self.k = st.alloc(b, h, cap, d, self.bits, self.group, dtype, device)
        self.v = st.alloc(b, h, cap, d, self.bits, self.group, dtype, device)
        self.pos = torch.full((b, h, cap), -1, dtype=torch.int64, device=device)
        self.ranked = spec is not None and spec.positions == "cache"
        self.rank = self.pos.clone() if self.ranked else None  # the position each key is rotated to
        self.inits = list(spec.state) if spec else []
        self.state = [torch.zeros(b, h, cap, device=device) for _ in self.inits]
        self.dtype, self.rope_base = dtype, rope_base
        self.counts: list[int] = [0] * b  # tokens held per row (the same for every head)
        self.scores: torch.Tensor | None = None  # the hook's latest scores over the window
        # the slots the last eviction freed in every row (B, H, m), taken in turn by the next
        # writes (no search for a free slot); None after an eviction that spared some rows
        self.freed: torch.Tensor | None = None
        self.taken = 0
        # the attention rows of the steps since the hook last fired, oldest first (B, H, rows, cap);
        # f16 beside quantized entries (attention to 11 significant bits: far finer than 4-8-bit
        # keys), and few enough rows that the buffer stays a small share of the cache
        row_dtype = torch.float16 if self.bits < 32 and dtype == torch.float32 else dtype
        if spec and rows > 1:
            per_slot = self.nbytes() // (b * h * cap)  # bytes a token costs: entries, position, state
            share = per_slot // (ROW_SHARE * torch.empty(0, dtype=row_dtype).element_size())
            rows = min(rows, max(MIN_ROWS, share))
        self.rows = torch.zeros(b, h, rows, cap, dtype=row_dtype, device=device) if spec and rows else None
        self.nrows = 0

    def read(self, parts: list[torch.Tensor], w: int) -> torch.Tensor:
        return st.decode(st.window(parts, w), self.bits, self.group, self.dtype)

    def nbytes(self) -> int:
        extra = [self.pos, *self.state] + ([self.rank] if self.ranked else [])
        return st.nbytes(self.k) + st.nbytes(self.v) + st.nbytes(extra)

    def row_nbytes(self) -> int:
        return 0 if self.rows is None else self.rows.numel() * self.rows.element_size()


def fire(cache: LayerCache, layer: int, inputs: list[torch.Tensor], op: str) -> torch.Tensor:
    """Call the layer's hook; check what it returned (count, shapes); keep its state -> scores."""
    spec = cache.spec
    shape = list(inputs[3].shape)  # pos: [B, H, C]
    got = spec.hook(inputs)
    who = f"{op}: the kv hook of layer {layer}"
    want = 1 + len(spec.state)
    if not isinstance(got, (list, tuple)) or len(got) != want or not all(isinstance(t, torch.Tensor) for t in got):
        n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
        raise RuntimeFault("E_ARG", f"{who} must return [scores, *state] ({want} tensors: 1 + its "
                           f"{len(spec.state)} declared state), got {n}", param="hook")
    for i, t in enumerate(got):
        if list(t.shape) != shape:
            what = "scores" if i == 0 else f"state {i - 1}"
            raise RuntimeFault("E_SHAPE", f"{who} returned {what} of shape {list(t.shape)}, expected {shape} "
                               "(batch, heads, cache slots)", param="hook")
    for old, new in zip(inputs[4:], got[1:], strict=True):
        old.copy_(new)  # views of the layer's state buffers
    return got[0]


def prefill_attn(q: torch.Tensor, k: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention of the last R queries q (B, H, R, D) over the prompt's keys
    k (B, H, T, D), valid (B, T) (False: left padding) -> (B, H, R, T); 0 where a query
    could not look, and a whole row of zeros for a padding query."""
    r, t = q.shape[2], k.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, R, T)
    causal = torch.arange(t, device=k.device)[None] <= torch.arange(t - r, t, device=k.device)[:, None]  # (R, T)
    allowed = valid[:, None, None, :] & causal  # (B, 1, R, T)
    a = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
    return torch.where(allowed.any(-1, keepdim=True), a, 0.0)


def place_prompt(cache: LayerCache, layer: int, q, k, v, pos: torch.Tensor, lengths: list[int], op: str,
                 k_raw: torch.Tensor | None = None) -> None:
    """The prompt's keys and values (B, H, T0, D) (zeros at padding), pos (B, H, T0) into the
    buffer; the hook fires over them and, past the budget, the best-scoring `cap` stay.
    k_raw: the keys before rotation, which a ranked cache stores (it turns them when read)."""
    spec, t = cache.spec, k.shape[2]
    kp = st.encode(k_raw if cache.ranked else k, cache.bits, cache.group)
    vp = st.encode(v, cache.bits, cache.group)
    state = [torch.full(pos.shape, s, device=k.device) for s in cache.inits]
    scores = None
    if spec is not None:
        r = t if spec.history is None else min(t, spec.history)
        valid = pos[:, 0] >= 0  # (B, T0)
        keys = st.decode(kp, cache.bits, cache.group, k.dtype)
        if cache.ranked:  # the prompt's ranks are its positions
            keys = apply_rope(keys, pos.clamp(min=0), cache.rope_base)
        values = st.decode(vp, cache.bits, cache.group, v.dtype)
        scores = fire(cache, layer, [keys, values, prefill_attn(q[:, :, t - r:], k, valid), pos, *state], op)
    cache.counts = [min(n, spec.budget) if spec and spec.budget else n for n in lengths]
    if t > cache.cap:  # more than the budget: each (b, h) keeps its best `cap`, in prompt order
        idx = scores.masked_fill(pos < 0, float("-inf")).topk(cache.cap, -1).indices.sort(-1).values
        kp, vp, pos = st.gather(kp, idx), st.gather(vp, idx), pos.gather(2, idx)
        state = [s.gather(2, idx) for s in state]
        scores = scores.gather(2, idx)
        if cache.ranked:  # renumber the kept tokens 0..n-1 (their keys are turned when read)
            pos_rank = torch.where(pos >= 0, (pos >= 0).cumsum(-1) - 1, -1)
    n = pos.shape[2]
    st.write_at(cache.k, kp, 0)
    st.write_at(cache.v, vp, 0)
    cache.pos[:, :, :n] = pos
    for buf, s in zip(cache.state, state, strict=True):
        buf[:, :, :n] = s
    if cache.ranked:
        cache.rank[:, :, :n] = pos_rank if t > cache.cap else pos
    cache.scores = scores


def evict(cache: LayerCache, scores: torch.Tensor, w: int, every_row: bool) -> None:
    """Free the `evict` lowest-scoring occupied slots of every (b, h) whose row is full."""
    spec, pos = cache.spec, cache.pos[:, :, :w]
    occupied = pos >= 0
    idx = scores.masked_fill(~occupied, float("inf")).topk(spec.evict, -1, largest=False).indices  # (B, H, m)
    full = None if every_row else occupied.sum(-1, keepdim=True) >= spec.budget  # (B, H, 1)
    if cache.ranked:
        rank = cache.rank[:, :, :w]
        gone = rank.gather(2, idx)
        if full is not None:
            gone = torch.where(full, gone, torch.iinfo(torch.int64).max)
        shift = (gone[:, :, None, :] < rank[..., None]).sum(-1)  # (B, H, w) evicted tokens before each
        rank.sub_(shift)
    cache.freed, cache.taken = (idx if full is None else None), 0
    st.clear(st.window(cache.k, w), idx, full)
    st.clear(st.window(cache.v, w), idx, full)
    for buf in [pos] + ([cache.rank[:, :, :w]] if cache.ranked else []):
        gone = buf.new_full(idx.shape, -1) if full is None else torch.where(full, -1, buf.gather(2, idx))
        buf.scatter_(2, idx, gone)


def write(cache: LayerCache, kp: list, vp: list, pos: torch.Tensor, rank: torch.Tensor | None, slot: int,
          w: int) -> None:
    """One new token per (b, h): its key and value parts (B, H, 1, E), position (B, H, 1) (and
    rank), its state at the init values; into `slot` while the buffer fills, else into a free
    slot of each (b, h) (there is one: a full row made room after the last fire)."""
    new = [(cache.pos, pos)] + ([(cache.rank, rank)] if rank is not None else [])
    if slot < cache.cap:
        st.write_at(cache.k, kp, slot)
        st.write_at(cache.v, vp, slot)
        for buf, val in new:
            buf[:, :, slot:slot + 1] = val
        for buf, init in zip(cache.state, cache.inits, strict=True):
            buf[:, :, slot].fill_(init)
        return
    if cache.freed is not None and cache.taken < cache.freed.shape[2]:
        idx = cache.freed[:, :, cache.taken:cache.taken + 1]  # (B, H, 1)
        cache.taken += 1
    else:
        idx = (cache.pos[:, :, :w] < 0).to(torch.uint8).argmax(-1, keepdim=True)  # (B, H, 1) the first free
    st.scatter(cache.k, kp, idx)
    st.scatter(cache.v, vp, idx)
    for buf, val in new:
        buf[:, :, :w].scatter_(2, idx, val)
    for buf, init in zip(cache.state, cache.inits, strict=True):
        buf[:, :, :w].scatter_(2, idx, init)


class Decoder:
    """A model's caches while it decodes: the prompt, then one fed token at a time. `total`
    is the most tokens a row will ever have (the full cache's preallocated size)."""

    _fire_every_step = False  # the tests' reference: a one-row buffer, so the hook fires at every step

    def __init__(self, model: GPT, prompt: torch.Tensor, lengths: list[int] | None, total: int, op: str):
        b, t0 = prompt.shape
        self.model, self.op, self.t0, self.fed = model, op, t0, 0
        dev = prompt.device
        self.lengths = lengths or [t0] * b
        pad = torch.tensor([t0 - n for n in self.lengths], device=dev) if lengths else None
        self.next_pos = t0 - (pad if pad is not None else torch.zeros(b, dtype=torch.int64, device=dev))  # (B,)
        blk = model.blocks[0].attn
        h, d = blk.heads, model.wte.embedding_dim // blk.heads
        dtype = model.wte.weight.dtype
        self.caches = []
        for i in range(len(model.blocks)):
            spec = model.kv_hooks.get(i)
            cap = total if spec is None or spec.budget is None else min(spec.budget, total)
            rows = ROWS if spec is None or spec.budget is None else min(spec.evict, ROWS)
            rows = 1 if self._fire_every_step else rows
            if spec is not None and spec.budget is None and not spec.state:
                rows = 0  # nothing to evict and no state to keep current: the hook never needs to run again
            self.caches.append(LayerCache(spec, b, h, cap, d, dtype, dev, model.rope_base, rows))
        self.prompt, self.pad = prompt, pad
        self.prev_k: list[torch.Tensor | None] = [None] * len(model.blocks)  # each layer's last raw key (B, H, 1, D)

    def prefill(self, more: bool) -> torch.Tensor:
        """Full causal attention over the prompt; every layer's slots filled -> last logits (B, V).
        `more`: a token will be fed next (so a full row makes room now)."""
        model, prompt = self.model, self.prompt
        b, t = prompt.shape
        pos = torch.arange(t, device=prompt.device).expand(b, t)  # (B, T0)
        if self.pad is not None:
            pos = (pos - self.pad[:, None]).clamp(min=-1)
        valid = pos >= 0
        x = model.embed(prompt, pos)  # (B, T0, C)
        eye = torch.eye(t, dtype=torch.bool, device=prompt.device)
        causal = torch.ones(t, t, dtype=torch.bool, device=prompt.device).tril()
        for i, block in enumerate(model.blocks):
            q, k_raw, v = block.attn.split(block.ln1(x))  # (B, H, T0, D)
            self.prev_k[i] = k_raw[:, :, -1:]  # smeared keys: the next token's predecessor
            k_raw = block.attn.smeared(k_raw, start=(pos == 0)[:, None, :, None])  # what the cache holds
            q, k = block.attn.rotate(q, pos.clamp(min=0)[:, None]), block.attn.rotate(k_raw, pos.clamp(min=0)[:, None])
            if self.pad is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:  # a padding query looks at itself only (no all-masked row), and its output is dropped
                mask = (valid[:, None, None, :] & causal) | eye  # (B, 1, T0, T0)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask) * valid[:, None, :, None]
                k, v = k * valid[:, None, :, None], v * valid[:, None, :, None]  # empty slots hold zeros
                k_raw = k_raw * valid[:, None, :, None]
            x = block.ff(x + block.attn.merge(y))
            cache = self.caches[i]
            hpos = pos[:, None].expand(-1, k.shape[1], -1)  # (B, H, T0)
            place_prompt(cache, i, q, k, v, hpos, self.lengths, self.op, k_raw)
            if more:
                self._make_room(cache, min(t, cache.cap))
        return model.logits(x[:, -1])

    def _make_room(self, cache: LayerCache, w: int) -> None:
        """Rows holding `budget` tokens drop `evict` of them before the next token comes."""
        spec = cache.spec
        if spec is None or spec.budget is None:
            return
        full = [n >= spec.budget for n in cache.counts]
        if any(full):
            evict(cache, cache.scores, w, all(full))
            cache.counts = [n - spec.evict if f else n for n, f in zip(cache.counts, full, strict=True)]

    def step(self, token: torch.Tensor, more: bool) -> torch.Tensor:
        """Feed one token (B,) through every layer's cache -> logits (B, V)."""
        model = self.model
        slot = self.t0 + self.fed  # the next slot while the buffer fills
        pos_new = self.next_pos + self.fed  # (B,) absolute positions
        x = model.embed(token[:, None], pos_new[:, None])  # (B, 1, C)
        rotary = model.positions == "rotary"
        d = model.wte.embedding_dim // model.blocks[0].attn.heads
        b, h = token.shape[0], model.blocks[0].attn.heads
        at = pos_new[:, None, None].expand(b, h, 1)
        angles = cos_sin(pos_new[:, None, None], d, model.rope_base) if rotary else None  # one for every layer
        for i, block in enumerate(model.blocks):
            cache = self.caches[i]
            w = min(cache.cap, slot + 1)
            q, k, v = block.attn.split(block.ln1(x))  # (B, H, 1, D)
            k, self.prev_k[i] = block.attn.smeared(k, self.prev_k[i]), k
            if cache.ranked:  # the new token is number n-1 of the n kept; its key is stored unrotated
                at = (cache.pos[:, :, :w] >= 0).sum(-1, keepdim=True)
                q = block.attn.rotate(q, at)
            elif rotary:
                q, k = turn(q, *angles), turn(k, *angles)
            write(cache, st.encode(k, cache.bits, cache.group), st.encode(v, cache.bits, cache.group),
                  pos_new[:, None, None].expand(b, h, 1), at if cache.ranked else None, slot, w)
            cache.counts = [n + 1 for n in cache.counts]
            keys, values, pos = cache.read(cache.k, w), cache.read(cache.v, w), cache.pos[:, :, :w]
            if cache.ranked:  # turned to their ranks (an empty slot's -1 turns zeros)
                keys = apply_rope(keys, cache.rank[:, :, :w], cache.rope_base)
            s = (q * (1 / math.sqrt(q.shape[-1]))) @ keys.transpose(-1, -2)  # (B, H, 1, w)
            attn = torch.softmax(s.masked_fill(pos[:, :, None] < 0, float("-inf")), -1)
            x = block.ff(x + block.attn.merge(attn @ values))
            if cache.rows is not None:
                self._buffer(cache, i, attn, keys, values, pos, w, more)
        self.fed += 1
        return model.logits(x[:, 0])

    def _buffer(self, cache: LayerCache, layer: int, attn, keys, values, pos, w: int, more: bool) -> None:
        """Keep this step's attention row (B, H, 1, w); fire the hook when its scores are needed
        (a full row must make room for the next token) or its row buffer is full."""
        cache.rows[:, :, cache.nrows, :w] = attn[:, :, 0]
        cache.nrows += 1
        budget = cache.spec.budget
        evicting = more and budget is not None and max(cache.counts) >= budget
        if evicting or cache.nrows == cache.rows.shape[2]:
            state = [buf[:, :, :w] for buf in cache.state]
            rows = cache.rows[:, :, :cache.nrows, :w].to(cache.dtype)  # (B, H, R, w), R >= 1
            cache.scores = fire(cache, layer, [keys, values, rows, pos, *state], self.op)
            cache.nrows = 0
        if evicting:
            self._make_room(cache, w)

    def sizes(self) -> list[tuple[int, int, int]]:
        """(tokens, bytes, row bytes) per layer: the most tokens any row holds, every cache buffer's
        bytes, and the bytes of the attention rows kept for the hook's next fire."""
        return [(max(c.counts), c.nbytes(), c.row_nbytes()) for c in self.caches]


def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def generate(model: GPT, prompt: torch.Tensor, steps: int, temperature: float, generator,
             lengths: list[int] | None = None) -> torch.Tensor:
    """(B, T0) prompt (left-padded to `lengths` when given) -> (B, T0 + steps) tokens."""
    b, t0 = prompt.shape
    dec = Decoder(model, prompt, lengths, t0 + steps, "generate")
    logits = dec.prefill(more=steps > 1)
    out = torch.empty(b, t0 + steps, dtype=prompt.dtype, device=prompt.device)
    out[:, :t0] = prompt
    for s in range(steps):
        nxt = _pick(logits, temperature, generator)  # (B,)
        out[:, t0 + s] = nxt
        if s + 1 < steps:  # the last token is returned, never fed
            logits = dec.step(nxt, more=s + 2 < steps)
    model.cache_sizes = dec.sizes()
    return out


def teacher_forced_nll(model: GPT, tokens: torch.Tensor, n_prefill: int) -> torch.Tensor:
    """(B, T) held-out tokens -> (B, T - n_prefill) negative log-likelihoods of tokens
    n_prefill.. given everything before, as the cache (and its policy) sees it."""
    t = tokens.shape[1]
    dec = Decoder(model, tokens[:, :n_prefill], None, t, "kv_eval")
    logits = dec.prefill(more=n_prefill + 1 < t)
    nll = []
    for p in range(n_prefill, t):
        nll.append(-torch.log_softmax(logits.float(), -1).gather(1, tokens[:, p:p + 1])[:, 0])
        if p + 1 < t:
            logits = dec.step(tokens[:, p], more=p + 2 < t)
    model.cache_sizes = dec.sizes()
    return torch.stack(nll, 1)
