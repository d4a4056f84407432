"""userbert_hf: contrastive user model pre-training on the Hugging Face stack."""
