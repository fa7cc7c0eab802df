"""The Open Inference Protocol v2 gRPC messages, built at import from their published
definition (package `inference`, service `GRPCInferenceService`): the same names and
field numbers, so any OIP v2 client (tritonclient, KServe's) talks to the server, with
no code generation step and no protoc at build time."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

# (name, number, type, label, message type) per field; label "r" repeated, "m" map.
Field = tuple[str, int, int, str, str | None]
TYPES = {
    "bool": F.TYPE_BOOL,
    "string": F.TYPE_STRING,
    "int64": F.TYPE_INT64,
    "int32": F.TYPE_INT32,
    "uint32": F.TYPE_UINT32,
    "uint64": F.TYPE_UINT64,
    "float": F.TYPE_FLOAT,
    "double": F.TYPE_DOUBLE,
    "bytes": F.TYPE_BYTES,
    "message": F.TYPE_MESSAGE,
}


def _f(name: str, number: int, kind: str, label: str = "", message: str | None = None) -> Field:
    return (name, number, TYPES[kind], label, message)


TENSOR_METADATA = [
    _f("name", 1, "string"),
    _f("datatype", 2, "string"),
    _f("shape", 3, "int64", "r"),
]
PARAMETERS = "InferParameter"
MESSAGES: dict[str, list[Field]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [_f("live", 1, "bool")],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [_f("ready", 1, "bool")],
    "ModelReadyRequest": [_f("name", 1, "string"), _f("version", 2, "string")],
    "ModelReadyResponse": [_f("ready", 1, "bool")],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        _f("name", 1, "string"),
        _f("version", 2, "string"),
        _f("extensions", 3, "string", "r"),
    ],
    "ModelMetadataRequest": [_f("name", 1, "string"), _f("version", 2, "string")],
    "ModelMetadataResponse": [
        _f("name", 1, "string"),
        _f("versions", 2, "string", "r"),
        _f("platform", 3, "string"),
        _f("inputs", 4, "message", "r", "ModelMetadataResponse.TensorMetadata"),
        _f("outputs", 5, "message", "r", "ModelMetadataResponse.TensorMetadata"),
    ],
    "ModelMetadataResponse.TensorMetadata": TENSOR_METADATA,
    "ModelInferRequest": [
        _f("model_name", 1, "string"),
        _f("model_version", 2, "string"),
        _f("id", 3, "string"),
        _f("parameters", 4, "message", "m", PARAMETERS),
        _f("inputs", 5, "message", "r", "ModelInferRequest.InferInputTensor"),
        _f("outputs", 6, "message", "r", "ModelInferRequest.InferRequestedOutputTensor"),
        _f("raw_input_contents", 7, "bytes", "r"),
    ],
    "ModelInferRequest.InferInputTensor": [
        *TENSOR_METADATA,
        _f("parameters", 4, "message", "m", PARAMETERS),
        _f("contents", 5, "message", "", "InferTensorContents"),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [
        _f("name", 1, "string"),
        _f("parameters", 2, "message", "m", PARAMETERS),
    ],
    "ModelInferResponse": [
        _f("model_name", 1, "string"),
        _f("model_version", 2, "string"),
        _f("id", 3, "string"),
        _f("parameters", 4, "message", "m", PARAMETERS),
        _f("outputs", 5, "message", "r", "ModelInferResponse.InferOutputTensor"),
        _f("raw_output_contents", 6, "bytes", "r"),
    ],
    "ModelInferResponse.InferOutputTensor": [
        *TENSOR_METADATA,
        _f("parameters", 4, "message", "m", PARAMETERS),
        _f("contents", 5, "message", "", "InferTensorContents"),
    ],
    PARAMETERS: [
        _f("bool_param", 1, "bool"),
        _f("int64_param", 2, "int64"),
        _f("string_param", 3, "string"),
    ],
    "InferTensorContents": [
        _f("bool_contents", 1, "bool", "r"),
        _f("int_contents", 2, "int32", "r"),
        _f("int64_contents", 3, "int64", "r"),
        _f("uint_contents", 4, "uint32", "r"),
        _f("uint64_contents", 5, "uint64", "r"),
        _f("fp32_contents", 6, "float", "r"),
        _f("fp64_contents", 7, "double", "r"),
        _f("bytes_contents", 8, "bytes", "r"),
    ],
}
METHODS = {
    name: (f"{name}Request", f"{name}Response")
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata")
} | {"ModelInfer": ("ModelInferRequest", "ModelInferResponse")}


def _add_field(message: Any, field: Field, owner: str) -> None:
    name, number, kind, label, type_name = field
    proto = message.field.add(name=name, number=number, type=kind, json_name=_camel(name))
    proto.label = F.LABEL_REPEATED if label in ("r", "m") else F.LABEL_OPTIONAL
    if label == "m":  # map<string, T>: a nested entry message, as protoc writes it
        entry_name = "".join(p.capitalize() for p in name.split("_")) + "Entry"
        entry = message.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        entry.field.add(
            name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="key"
        )
        entry.field.add(
            name="value",
            number=2,
            type=F.TYPE_MESSAGE,
            label=F.LABEL_OPTIONAL,
            type_name=f".{PACKAGE}.{type_name}",
            json_name="value",
        )
        proto.type_name = f".{PACKAGE}.{owner}.{entry_name}"
    elif type_name:
        proto.type_name = f".{PACKAGE}.{type_name}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="kubeloop/grpc_predict_v2.proto", package=PACKAGE, syntax="proto3"
    )
    built: dict[str, Any] = {}
    for full_name in sorted(MESSAGES, key=lambda n: n.count(".")):
        outer, _, inner = full_name.rpartition(".")
        parent = built[outer].nested_type if outer else file.message_type
        built[full_name] = parent.add(name=inner or full_name)
    for full_name, fields in MESSAGES.items():
        for field in fields:
            _add_field(built[full_name], field, full_name)
    parameter = built[PARAMETERS]
    parameter.oneof_decl.add(name="parameter_choice")
    for field in parameter.field:
        field.oneof_index = 0
    service = file.service.add(name="GRPCInferenceService")
    for method, (request, response) in METHODS.items():
        service.method.add(
            name=method, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}"
        )
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(file_descriptor())
CLASSES = message_factory.GetMessageClassesForFiles(["kubeloop/grpc_predict_v2.proto"], _POOL)


def message(name: str) -> Any:
    """The message class, e.g. message("ModelInferRequest")."""
    return CLASSES[f"{PACKAGE}.{name}"]
