"""The README's notebook example (section "Python: steer.api"), as a script that prints
what the README shows: `python scripts/api_example.py` (the embedded model, CPU)."""

import torch

import steer.api as steer

torch.set_num_threads(2)
lm = steer.load()  # the embedded SmolLM2-135M-Instruct + the SAE shipped for it
print(lm)

prompt = "Tell me about your weekend."
print("plain:   ", lm.generate(prompt, 24))
with lm.steer("2.5 #2374"):  # feature 2374: " Paris"
    print("steered: ", lm.generate(prompt, 24))
print("gated:   ", lm.generate(prompt, 24, steer="3 #2374 @when:#6295>0.2"))

text = "The Eiffel Tower in Paris is the most famous landmark of France."
acts = lm.activations(text, [2374, 6295])  # (T, 2), raw SAE units
for token, row in zip(lm.tokens(text), acts.tolist(), strict=True):
    if max(row) > 0:
        print(f"{token!r:>10}  #2374 {row[0]:5.2f}  #6295 {row[1]:5.2f}")
print([(hit.latent, round(hit.score, 2)) for hit in lm.features(text, top=3)])
