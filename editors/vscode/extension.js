// The VS Code client for `nnc lsp`: starts the language server for `.nn` files and hands
// it the editor's documents (diagnostics as you type, hover, go to definition, completion).
// Plain CommonJS, so the extension needs no build step; `npm install` fetches the client.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("nnc").get("path") || "nnc";
  const server = { command, args: ["lsp"] };
  const options = { documentSelector: [{ scheme: "file", language: "nn" }] };
  client = new LanguageClient("nnc", "nnc language server", server, options);
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
