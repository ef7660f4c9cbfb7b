"""Integer ids shifted by an offset table are still the input's ids: their embedding is where the data enters.

Dia's decoder embeds each audio codebook through one table, `embed(audio_codes + offsets)`; an embedding of the
shifted ids is the data entering the graph exactly as an embedding of the ids themselves. Positions computed from a
padding mask (`cumsum(ids != pad) * mask + pad`) are not a shift of the ids: bookkeeping, whose embedding is a
parameter-only signal. The tables are worked out by hand from docs/design.md (../shared/DESIGN.md): in a pre-LN
block `x + f(LN(x))` on the data stream, the norm's γ scales the branch (`branch`); the final norm before the
output head is `head` unless its output meets an independent signal first (then `stream`).
"""

import warnings

import torch
from torch import nn

from hf_gammareg import classify_gammas

B = "branch"
H = "head"
S = "stream"


class _ShiftedCodebooks(nn.Module):
    """Two codebooks of 8 codes in one table of 16 rows (Dia's layout), one pre-LN block, and a context that is
    data too (an encoder's states, as Dia's decoder gets them): the graph has a data entry point besides the ids."""

    def __init__(self, codes: int = 8, books: int = 2, width: int = 16):
        super().__init__()
        self.register_buffer("offsets", torch.arange(books) * codes, persistent=False)
        self.embed = nn.Embedding(codes * books, width)
        self.ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ln_f = nn.LayerNorm(width)
        self.context = nn.Linear(width, width)
        self.head = nn.Linear(width, codes)

    def forward(self, input_ids, encoder_hidden_states):  # [batch, time, books], [batch, time, width]
        x = self.embed(input_ids + self.offsets).sum(dim=2)
        x = x + self.mlp(self.ln(x))
        return self.head(self.ln_f(x) + self.context(encoder_hidden_states))


class _MaskPositions(nn.Module):
    """RoBERTa-style positions from the padding mask: their embedding is no data, the token embedding is."""

    def __init__(self, vocab: int = 10, width: int = 16, pad: int = 1):
        super().__init__()
        self.pad = pad
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(32, width)
        self.ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids):
        mask = input_ids.ne(self.pad).int()
        positions = (torch.cumsum(mask, dim=1) * mask).long() + self.pad
        x = self.tokens(input_ids) + self.positions(positions)
        x = x + self.mlp(self.ln(x))
        return self.head(self.ln_f(x))


def _roles(model, **inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classify_gammas(model, inputs=inputs).roles


def test_embedding_of_shifted_ids_is_data():
    torch.manual_seed(0)
    model = _ShiftedCodebooks()
    ids = torch.randint(0, 8, (2, 5, 2))
    # `ln` scales the block's branch; `ln_f`'s output meets the context (an independent signal) before the head,
    # so it is a stream γ (DESIGN's table: `head` never meets one). Before the shift was read as data, the block's
    # `x` looked like a parameter-only signal and `ln.weight` came out `invariant`.
    expected = {"ln.weight": B, "ln_f.weight": S}
    assert _roles(model, input_ids=ids, encoder_hidden_states=torch.randn(2, 5, 16)) == expected


def test_positions_from_a_padding_mask_are_no_data():
    torch.manual_seed(0)
    model = _MaskPositions()
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 1, 1]])
    assert _roles(model, input_ids=ids) == {"ln.weight": B, "ln_f.weight": H}
