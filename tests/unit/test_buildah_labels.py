"""buildah gets the image labels as one LABEL instruction (one build step), in a copy of the Dockerfile."""

from pathlib import Path

from mlops_cli.builders import BuildRequest
from mlops_cli.builders.buildah import labelled_dockerfile


def test_labels_are_one_last_instruction_escaped_as_dockerfile_words(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM base\nCOPY model/ /app/model/")  # no final newline
    labels = {"org.opencontainers.image.version": "2", "io.mlops.model.ref": 'local:a$HOME"b\\c'}
    path = labelled_dockerfile(BuildRequest(context=tmp_path, tag="r/x:1", labels=labels))
    assert path.parent == tmp_path and path.name != "Dockerfile"
    assert (tmp_path / "Dockerfile").read_text() == "FROM base\nCOPY model/ /app/model/"  # the bundle's, untouched
    lines = path.read_text().splitlines()
    assert lines[:2] == ["FROM base", "COPY model/ /app/model/"]
    # sorted, quoted; \, " and $ escaped so that buildah neither expands $HOME nor ends the word early
    # (read back with real buildah: tests/integration/images/test_image_pipeline.py checks the labels)
    assert lines[2] == ('LABEL "io.mlops.model.ref"="local:a\\$HOME\\"b\\\\c" "org.opencontainers.image.version"="2"')
    assert len(lines) == 3
