// Build the web client into gateway/web/static/ (the Python package ships that folder):
// one bundled ES module (our code and libsodium) and one stylesheet, each named after its
// digest and referenced from index.html with its subresource-integrity hash; the message
// catalogs as i18n-<lang>.json; manifest.json lists what the gateway may serve.
// Run by `make` (after `npm ci`); the output is the same for the same sources.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, "..", "gateway", "web", "static");
const src = join(here, "src");

const bundle = await build({
  entryPoints: [join(src, "app.js")], bundle: true, format: "esm", minify: true,
  write: false, target: "es2022", legalComments: "inline", charset: "utf8",
  // libsodium's ESM build refers to Node modules it never loads in a browser.
  external: [], platform: "browser", logLevel: "warning",
});
const files = { "index.html": false };
const named = (base, ext, data) => {
  const digest = createHash("sha384").update(data).digest();
  const name = `${base}-${digest.toString("hex").slice(0, 16)}.${ext}`;
  files[name] = true;
  return { name, sri: `sha384-${digest.toString("base64")}`, data };
};
const app = named("app", "js", Buffer.from(bundle.outputFiles[0].contents));
const style = named("style", "css", readFileSync(join(src, "style.css")));

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
writeFileSync(join(out, app.name), app.data);
writeFileSync(join(out, style.name), style.data);
for (const file of readdirSync(join(src, "i18n")).sort()) {
  const name = `i18n-${file}`;
  JSON.parse(readFileSync(join(src, "i18n", file), "utf8")); // a broken catalog fails the build
  writeFileSync(join(out, name), readFileSync(join(src, "i18n", file)));
  files[name] = false;
}
const page = readFileSync(join(src, "index.html"), "utf8")
  .replace("{{app}}", app.name).replace("{{app_sri}}", app.sri)
  .replace("{{style}}", style.name).replace("{{style_sri}}", style.sri);
writeFileSync(join(out, "index.html"), page);
writeFileSync(join(out, "manifest.json"), `${JSON.stringify({ v: 1, files }, null, 1)}\n`);
console.log(`web client built into ${out}: ${Object.keys(files).length} files, app ${app.data.length} bytes`);
