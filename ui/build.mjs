// Builds the dashboard into the Python package (src/autellix/ui_static/), which is committed,
// so `pip install .` ships it and the page needs no network at run time: `npm ci && npm run build`.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "src", "autellix", "ui_static");

await rm(out, { recursive: true, force: true });
await mkdir(join(out, "assets"), { recursive: true });
await build({
  entryPoints: { dashboard: join(here, "src", "main.js") },
  outdir: join(out, "assets"),
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  legalComments: "linked", // the libraries' licence notices, in dashboard.js.LEGAL.txt
  logLevel: "info",
});
await copyFile(join(here, "index.html"), join(out, "index.html"));

// What the build was made from: tests/unit/test_dashboard_assets.py recomputes this over ui/ and
// fails when the committed build is older than its sources (someone forgot `npm run build`).
async function sources() {
  const names = ["build.mjs", "index.html", "package.json", "package-lock.json"];
  for (const entry of await readdir(join(here, "src"), { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) names.push(join(entry.parentPath ?? entry.path, entry.name).slice(here.length + 1));
  }
  return names.sort();
}
const hash = createHash("sha256");
for (const name of await sources()) {
  hash.update(`${name}\0`);
  hash.update(await readFile(join(here, name)));
  hash.update("\0");
}
await writeFile(join(out, "SOURCES.sha256"), `${hash.digest("hex")}\n`);
