"""What features mean: the per-SAE catalog (statistics, top contexts, logit lens, labels,
search) and the family view across widths. New analyses of latents live here."""
