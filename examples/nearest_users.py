"""Find users with similar tastes: embed every MovieLens user with a pre-trained UserBERT model, save the vectors
and search nearest neighbours (faiss when the ``faiss`` extra is installed, else an exact numpy search).

    userbert pretrain --max_steps 50 --output_dir outputs/userbert-pretrained      # or any pre-trained folder
    python examples/nearest_users.py --model_name_or_path outputs/userbert-pretrained
    python examples/nearest_users.py --model_name_or_path org/userbert-movielens --query_user_ids 1 42 --k 3

Steps: 1. load the user model's config, vocabulary and tokenizer, 2. embed the users, 3. save the embeddings,
4. search the nearest users (cosine similarity: inner products of L2-normalised vectors).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from userbert_hf import UserBertConfig
from userbert_hf.assets import load_user_model_assets
from userbert_hf.data import load_behavior_data
from userbert_hf.embedding_export import embed_users, nearest_users, save_user_embeddings


@dataclass
class NearestUsersArguments:
    model_name_or_path: str = field(
        default="outputs/userbert-pretrained", metadata={"help": "A pre-trained model folder or Hub repository id."}
    )
    data: str = field(default="movielens", metadata={"help": "'movielens' (bundled) or another behaviour dataset."})
    output: str = field(
        default="outputs/user_embeddings.parquet", metadata={"help": "Where the embeddings go (.parquet or a folder)."}
    )
    query_user_ids: list[str] = field(
        default_factory=lambda: ["1", "2"], metadata={"help": "Users to find neighbours for."}
    )
    k: int = field(default=5, metadata={"help": "Neighbours per query user."})
    batch_size: int = field(default=64, metadata={"help": "Users per forward pass."})
    recent: int = field(default=3, metadata={"help": "Most recent behaviours shown per user."})


def main(argv: list[str] | None = None):
    (args,) = HfArgumentParser(NearestUsersArguments).parse_args_into_dataclasses(args=argv)

    # 1. Load the user model's config with its frozen behaviour vocabulary (and word tokenizer for text behaviours).
    config = UserBertConfig.from_pretrained(args.model_name_or_path)
    vocabulary, tokenizer = load_user_model_assets(args.model_name_or_path, config)
    print(f"1. {args.model_name_or_path}: {config.behavior_type} behaviours, {config.context_encoder} context encoder, "
          f"{config.hidden_size}-dim user embeddings, {len(vocabulary) - 1:,} known behaviours")

    # 2. Embed the users. The logs are read with the model's vocabulary, so ids mean what they meant in pre-training.
    data = load_behavior_data(args.data, vocabulary=vocabulary, max_behaviors=config.max_behaviors, verbose=False)
    embeddings = embed_users(args.model_name_or_path, data, batch_size=args.batch_size)
    print(f"2. embedded {embeddings.num_rows} users")

    # 3. Save them (Parquet, or a datasets folder for any other path).
    save_user_embeddings(embeddings, args.output)
    print(f"3. saved to {args.output}")

    # 4. Nearest users by cosine similarity, with what each of them watched last.
    neighbor_ids, scores = nearest_users(embeddings, args.query_user_ids, k=args.k, metric="cosine")
    sequences = dict(zip(data.users["user_id"], data.users["behavior_ids"]))

    def recent(user_id: str) -> str:
        return "; ".join(vocabulary.text(i)[:40] for i in sequences[user_id][-args.recent :])

    print("4. nearest users (cosine):")
    for query, neighbours, query_scores in zip(args.query_user_ids, neighbor_ids, scores):
        print(f"   user {query}: {recent(query)}")
        for neighbour, score in zip(neighbours, query_scores):
            print(f"      {score:.3f}  user {neighbour}: {recent(neighbour)}")
    return neighbor_ids, scores


if __name__ == "__main__":
    main()
