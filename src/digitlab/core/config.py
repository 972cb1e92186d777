"""One settings object, read from environment variables (and an optional `.env`), with sane defaults.

Every knob of digitlab lives here so the README's configuration reference has one source.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from digitlab.errors import DigitlabError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGITLAB_", env_file=".env", extra="ignore")

    # --- files -----------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="Working data folder (SQLite file, spool, exports).")
    mnist_dir: Path | None = Field(
        None, description="Folder with the four MNIST IDX .gz files; default <data_dir>/mnist (`make` passes "
        "../shared/mnist when it is there)."
    )
    model_dir: Path = Field(Path("models"), description="Where trained model artefacts are written and read.")
    train_limit: int | None = Field(
        None, ge=100, description="`digitlab run` trains missing models on the first N MNIST images only "
        "(a quick first start with weaker models); default: all 60,000."
    )
    handwriting_dir: Path | None = Field(
        None,
        description="Folder with real handwriting that is not MNIST (usps.npz, semeion.npz, SHA256SUMS): training "
        "and learning use its non-held-out parts, `digitlab evaluate --real` / `--numbers` its held-out ones; "
        "default <data_dir>/handwriting (`make` passes ../shared/handwriting when it is there).",
    )
    mnist_mirrors: list[str] = Field(
        default_factory=lambda: [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        description="Base URLs tried in order when the MNIST files are missing (checksums verified).",
    )

    # --- database --------------------------------------------------------------------------------
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "DIGITLAB_DATABASE_URL"),
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host:5432/db.",
    )
    postgres_host: str | None = Field(None, validation_alias="POSTGRES_HOST")
    postgres_port: int = Field(5432, ge=1, le=65535, validation_alias="POSTGRES_PORT")
    postgres_db: str = Field("digitlab", validation_alias="POSTGRES_DB")
    postgres_user: str = Field("postgres", validation_alias="POSTGRES_USER")
    postgres_password: str = Field("", validation_alias="POSTGRES_PASSWORD")
    spool_dir: Path | None = Field(
        None, description="Durable outage spool for predictions; default <data_dir>/spool/<host>-<pid>. One process's: "
        "`digitlab serve` with several workers refuses it."
    )
    max_waiting_labels: int = Field(
        10_000, ge=1, description="Most answers (labels by a prediction's or number's uid) kept waiting for a record "
        "not stored yet, during and after a database outage: in each process's spool, and in the database's "
        "`pending_feedback` (a day at most); past it an answer is refused (503 `too_many_waiting_labels`) and one "
        "replayed from a spool is dropped and logged.",
    )
    admin_token: str | None = Field(
        None,
        description="When set, history, images, export and deletion need 'Authorization: Bearer <token>'; "
        "starting a learning run over HTTP (`POST /api/v1/learn`, the Models page's \"Learn now\") needs it always. "
        "Set the same value for the UI (`digitlab run` passes it to both): History then shows its log, and the "
        "Models page offers \"Learn now\".",
    )

    @field_validator("data_dir", "model_dir", mode="before")
    @classmethod
    def _folder_named(cls, value):
        """`DIGITLAB_DATA_DIR=` (empty, as `${VAR:-}` in compose gives it) meant the current folder: a
        digitlab.db appeared wherever the command ran."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty: name a folder, or unset it for the default")
        return value

    @field_validator("mnist_dir", "handwriting_dir", "spool_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """An empty optional folder is the default, as if unset (it meant the current folder)."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("model_dir", "data_dir", "mnist_dir", "handwriting_dir", "spool_dir")
    @classmethod
    def _folder_not_file(cls, value: Path | None) -> Path | None:
        """A file where a folder is named (or where one of its parents is) was "svm.json is missing: run `digitlab
        train svm`" (wrong advice), or "File exists", or found only after minutes of training (probes)."""
        for path in () if value is None else (value, *value.parents):
            if path.exists():
                if not path.is_dir():
                    raise ValueError("is a file, not a folder" if path == value else f"{path} is a file, not a folder")
                break
        return value

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str | None) -> str | None:
        """A typo ("svn") served the best ready model without a word: a name digitlab does not know is refused."""
        if not value:
            return None
        from digitlab.models.registry import MODEL_SPECS  # (only when one is named: no numpy for nothing)

        if value not in MODEL_SPECS:
            raise ValueError(f"is not a model digitlab knows; choose one of {', '.join(MODEL_SPECS)}")
        return value

    @field_validator("admin_token")
    @classmethod
    def _sendable_token(cls, value: str | None) -> str | None:
        """White space around it is dropped (a token read from a file ends in a newline that no client can
        send); a token no client can send in a header as typed (not printable ASCII) is refused: either
        locked every admin route for good, silently."""
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        if not (value.isascii() and value.isprintable()) or any(c.isspace() for c in value):
            raise ValueError("must be printable ASCII without spaces (a client sends it in an HTTP header)")
        return value

    @field_validator("api_url")
    @classmethod
    def _reachable_url(cls, value: str) -> str:
        """An address the UI can send requests to: `DIGITLAB_API_URL=garbage` started the UI without a word,
        and every page then said the service was unreachable."""
        url = urlsplit(value.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// address with a host, e.g. http://127.0.0.1:8000")
        try:
            url.port  # noqa: B018 -- raises on a port that is no number or out of range
        except ValueError as exc:
            raise ValueError(f"has an unusable port ({exc})") from None
        return value.strip()

    # --- API -------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on (0: any free port, for `digitlab serve` only).")
    workers: int = Field(  # (at most 64: a typo of 1000 started 1000 processes of ~350 MB each)
        0, ge=0, le=64, description="uvicorn worker processes of one API, 1-64; 0: one per CPU core, at most 4 (each ~350 MB)."
    )
    max_upload_bytes: int = Field(5_000_000, ge=1, description="Largest accepted request body, in bytes.")
    max_image_pixels: int = Field(
        25_000_000, ge=1, description="Largest accepted image (width x height) before decoding: bomb guard."
    )
    default_model: str | None = Field(
        None, description="Model used when a request names none (cnn, svm, svm_pca, extra_trees or random_forest; "
        "another name is refused at start); default: the best ready one."
    )

    # --- UI --------------------------------------------------------------------------------------
    api_url: str = Field("http://127.0.0.1:8000", description="Where the Streamlit UI reaches the API.")
    ui_host: str = "127.0.0.1"
    ui_port: int = Field(8501, ge=0, le=65535, description="Port the Streamlit UI listens on (0: any free port, for `digitlab ui` only).")
    api_started_beside: bool = Field(False, description="Set by `digitlab run` for its UI: the API is started (and "
                                     "restarted) beside it, so while it has never answered the UI says it is starting.")

    @property
    def mnist_path(self) -> Path:
        return self.mnist_dir if self.mnist_dir is not None else self.data_dir / "mnist"

    @property
    def handwriting_path(self) -> Path:
        return self.handwriting_dir if self.handwriting_dir is not None else self.data_dir / "handwriting"

    @property
    def sqlalchemy_url(self) -> str:
        """DATABASE_URL, else POSTGRES_* when POSTGRES_HOST is set, else an embedded SQLite file."""
        if self.database_url:
            return self.database_url
        if self.postgres_host:
            auth = quote(self.postgres_user, safe="")
            if self.postgres_password:
                auth += ":" + quote(self.postgres_password, safe="")
            return f"postgresql+psycopg://{auth}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"
        from sqlalchemy.engine import URL  # (here: the UI reads these settings and loads no database code)

        # (quoted: a data folder named "d%41b" or "q?cache=shared" put the database elsewhere, or nowhere)
        return URL.create("sqlite", database=(self.data_dir / "digitlab.db").as_posix()).render_as_string(False)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` instead of patching this."""
    try:
        return Settings()
    except UnicodeDecodeError:  # every command ended in a traceback
        raise DigitlabError(f"{Path('.env').absolute()} is not UTF-8 text (saved as UTF-16 by Notepad or "
                            "PowerShell?): save it as UTF-8", code="invalid_settings") from None  # fmt: skip
