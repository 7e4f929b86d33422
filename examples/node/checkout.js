// A checkout against a running ledger from Node.js, then one refused call and its details.
//
//   npm ci --prefix examples/node
//   node examples/node/checkout.js [127.0.0.1:50051] [plk_...]
//
// Prints one JSON line per step, so a script (or the test suite) can read what happened.
"use strict";

const path = require("node:path");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const googleProtoFiles = require("google-proto-files");

const PROTOS = path.resolve(__dirname, "../../protos");
const GOOGLE_PROTOS = path.dirname(googleProtoFiles.getProtoPath()); // holds google/rpc/*.proto

// The loader's defaults suit nothing here: without keepCase, snake_case fields written in a
// request are silently dropped; without longs: String, int64 amounts arrive as Long objects;
// without enums: String, enums arrive as numbers; without defaults, zero values are missing.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTOS, GOOGLE_PROTOS],
};

// google.rpc.Status and the detail messages the ledger sends (ErrorInfo, BadRequest, RetryInfo).
const details = new protobuf.Root().loadSync(
  [
    path.join(GOOGLE_PROTOS, "google/rpc/status.proto"),
    path.join(GOOGLE_PROTOS, "google/rpc/error_details.proto"),
  ],
  { keepCase: true },
);
const Status = details.lookupType("google.rpc.Status");

// The status details of a refused call: `grpc-status-details-bin` holds a google.rpc.Status
// whose `details` are Any messages; each is decoded by the type its URL names.
function statusDetails(error) {
  const [bytes] = error.metadata ? error.metadata.get("grpc-status-details-bin") : [];
  if (!bytes) return [];
  const status = Status.decode(bytes);
  return status.details.map((any) => {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf("/") + 1);
    const type = details.lookupType(typeName);
    return { "@type": typeName, ...type.toObject(type.decode(any.value), { longs: String }) };
  });
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

async function main() {
  const target = process.argv[2] || "127.0.0.1:50051";
  const apiKey = process.argv[3] || "";
  const definition = protoLoader.loadSync("ledger/v1/sales.proto", LOADER_OPTIONS);
  const { ledger } = grpc.loadPackageDefinition(definition);
  const sales = new ledger.v1.SalesService(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (apiKey) metadata.set("authorization", `Bearer ${apiKey}`);
  const print = (step, value) => console.log(JSON.stringify({ step, ...value }));

  const { sale } = await unary(sales, "CreateSale", {
    request_id: crypto.randomUUID(),
    location_id: "store-1",
    channel: "SALES_CHANNEL_IN_STORE",
    currency_code: "USD",
    line_items: [
      { sku: "TEA", name: "Green tea", quantity: 2, unit_price: "350", tax_rate_ppm: 80000 },
    ],
  }, metadata);
  print("created", { sale_id: sale.id, total: sale.total, amount_due: sale.amount_due });

  const { payment } = await unary(sales, "RequestPayment", {
    request_id: crypto.randomUUID(),
    sale_id: sale.id,
    amount: sale.amount_due,
    currency_code: "USD",
    tender_types: ["TENDER_TYPE_CARD"],
    callback_url: "https://pos.example.com/payments/callback",
    app_id: "example-pos",
    api_version: "1.0",
    state: "order-42",
  }, metadata);
  print("requested", { payment_id: payment.id, status: payment.status });

  await unary(sales, "RecordPaymentResult", {
    request_id: crypto.randomUUID(),
    sale_id: sale.id,
    payment_id: payment.id,
    outcome: "PAYMENT_OUTCOME_APPROVED",
    tender: "TENDER_TYPE_CARD",
    card: { brand: "visa", last4: "4242", entry_method: "CARD_ENTRY_METHOD_CONTACTLESS" },
    auth_code: "A1B2C3",
    processor_reference: "ch_123",
  }, metadata);
  const done = (await unary(sales, "GetSale", { sale_id: sale.id }, metadata)).sale;
  print("completed", { sale_id: done.id, status: done.status, paid_total: done.paid_total,
    version: done.version });

  try {
    await unary(sales, "CreateSale", {
      request_id: crypto.randomUUID(),
      location_id: "store-1",
      channel: "SALES_CHANNEL_IN_STORE",
      currency_code: "XXZ",
      line_items: [{ sku: "TEA", name: "Green tea", quantity: 0, unit_price: "350" }],
    }, metadata);
    print("refused", { code: "OK" });
  } catch (error) {
    print("refused", { code: grpc.status[error.code], message: error.details,
      details: statusDetails(error) });
  }
  sales.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
