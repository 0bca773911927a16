import pytest

from mlops_cli.errors import StageFailed
from mlops_cli.interface_check import breaking_changes

OLD = {
    "inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "string", "required": False, "default": ""}],
    "outputs": [{"name": "label", "type": "string"}],
}


def variant(inputs=None, outputs=None):
    return {
        "inputs": inputs if inputs is not None else OLD["inputs"],
        "outputs": outputs if outputs is not None else OLD["outputs"],
    }


@pytest.mark.parametrize(
    "new, expected",
    [
        (variant(), []),
        (variant(inputs=OLD["inputs"] + [{"name": "c", "type": "number", "required": False, "default": 0}]), []),
        (variant(outputs=OLD["outputs"] + [{"name": "probability", "type": "number"}]), []),
        (
            variant(inputs=[{"name": "a", "type": "number"}, {"name": "b", "type": "string"}]),
            ["input 'b' became required"],
        ),
        (
            variant(inputs=[{"name": "a", "type": "number"}, OLD["inputs"][1], {"name": "c", "type": "number"}]),
            ["new required input 'c'"],
        ),
        (variant(inputs=[{"name": "a", "type": "integer"}, OLD["inputs"][1]]), ["input 'a' retyped number -> integer"]),
        (
            variant(inputs=[{"name": "a2", "type": "number"}, OLD["inputs"][1]]),
            ["input 'a' removed", "new required input 'a2'"],
        ),
        (variant(outputs=[{"name": "class", "type": "string"}]), ["output 'label' removed"]),
        (variant(outputs=[{"name": "label", "type": "integer"}]), ["output 'label' retyped string -> integer"]),
    ],
)
def test_breaking_changes(new, expected):
    assert breaking_changes(OLD, new) == expected


def test_order_matters_for_list_rows():
    swapped = variant(inputs=[OLD["inputs"][1], OLD["inputs"][0]])
    assert breaking_changes(OLD, swapped) == [
        "input positions changed: 'b' 2 -> 1, 'a' 1 -> 2 (rows sent as lists would change meaning)"
    ]
    inserted = variant(
        inputs=[OLD["inputs"][0], {"name": "z", "type": "number", "required": False, "default": 0}, OLD["inputs"][1]]
    )
    assert breaking_changes(OLD, inserted) == [
        "input positions changed: 'b' 2 -> 3 (rows sent as lists would change meaning)"
    ]


@pytest.mark.parametrize(
    "bad, needle",
    [
        (
            variant(inputs=[{"name": "a", "type": "number"}, {"name": "a", "type": "number"}]),
            "duplicate inputs name(s): a",
        ),
        (variant(inputs=[{"name": "a", "type": "text"}]), "inputs.0.type"),
        (variant(inputs=[{"name": "a", "type": "number", "required": False}]), "needs a default of type number"),
    ],
)
def test_a_schema_the_server_would_refuse_is_one_line_not_compared(bad, needle):
    with pytest.raises(StageFailed) as info:
        breaking_changes(OLD, bad)
    assert needle in str(info.value) and "\n" not in str(info.value)
