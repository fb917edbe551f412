// Hand-written protobuf-es (v2) descriptors for the tests: no code
// generation step, no generated files.
//
// `ikatest.Echo/Watch` is the wire-compatible view of tests/proto/echo.proto
// that a browser client has. Its `Item` leaves out echo.proto's
// `uint64 collision = 100000000`: the Rust tests use that field to make
// collisions on purpose, and no real schema declares it. protobuf-es reads a
// declared field without checking its wire type, so with it declared a
// keepalive (field 100000000, wire type 2) would fail to decode before any
// interceptor could remove it.
//
// `vectors.Event` and `vectors.Empty` decode the shared vectors
// (tests/vectors/app.proto's Event, and a message with no field at all, so
// every field of a vector is an unknown field).

import { create, createFileRegistry } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

function field(name, number, type) {
  const jsonName = name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  return { name, number, type, label: Label.OPTIONAL, jsonName };
}

const ikatest = create(FileDescriptorProtoSchema, {
  name: "ikatest_web.proto",
  package: "ikatest",
  syntax: "proto3",
  messageType: [
    {
      name: "Item",
      field: [field("seq", 1, Type.UINT64), field("payload", 2, Type.BYTES)],
    },
    {
      name: "Plan",
      field: [
        field("count", 1, Type.UINT64),
        field("gap_ms", 2, Type.UINT32),
        field("size", 3, Type.UINT32),
        field("first_gap_ms", 4, Type.UINT32),
      ],
    },
  ],
  service: [
    {
      name: "Echo",
      method: [
        {
          name: "Watch",
          inputType: ".ikatest.Plan",
          outputType: ".ikatest.Item",
          serverStreaming: true,
        },
      ],
    },
  ],
});

const vectors = create(FileDescriptorProtoSchema, {
  name: "vectors_web.proto",
  package: "vectors",
  syntax: "proto3",
  messageType: [
    {
      name: "Event",
      field: [field("seq", 1, Type.UINT64), field("text", 2, Type.STRING)],
    },
    { name: "Empty" },
  ],
});

const registry = createFileRegistry(
  createFileRegistry(ikatest, () => undefined),
  createFileRegistry(vectors, () => undefined),
);

export const ItemSchema = registry.getMessage("ikatest.Item");
export const PlanSchema = registry.getMessage("ikatest.Plan");
export const EchoService = registry.getService("ikatest.Echo");
export const EventSchema = registry.getMessage("vectors.Event");
export const EmptySchema = registry.getMessage("vectors.Empty");
