// The render check's renderer: Mermaid diagrams through mermaid-cli's own renderMermaid()
// (the function `mmdc` calls) in one headless Chromium from Debian's packages, and whole
// report pages (GFM HTML made by tests/render/render.py) with the same Mermaid, screenshotted
// and measured in the live page. Copied next to the node_modules of one pinned install
// (tests/render/build.sh), so `mermaid` and `puppeteer` resolve to that install's.
//
//   node render.mjs job.json   -> writes job.out (JSON: one result per diagram and page)
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer';
import { renderMermaid } from '@mermaid-js/mermaid-cli';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, 'package.json'));
const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const mermaidJs = require.resolve('mermaid/dist/mermaid.min.js');
const mermaidVersion = JSON.parse(
  readFileSync(join(dirname(mermaidJs), '..', 'package.json'), 'utf8')).version;

// as the machine's notes say Chromium must run here: no background traffic, no sandbox (root)
const browser = await puppeteer.launch({
  executablePath: job.chromium,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage'],
});
const results = { mermaid: mermaidVersion, diagrams: [], cli: [], pages: [] };
try {
  results.diagrams = await renderAll(job.diagrams || []);
  // mmdc's own path (a page per diagram, 0.5-2 s each) for a few, to show the bulk path
  // above gives the same verdicts
  for (const d of job.cli || []) {
    try {
      await renderMermaid(browser, d.text, 'svg', { mermaidConfig: { securityLevel: 'strict' } });
      results.cli.push({ id: d.id });
    } catch (err) {
      results.cli.push({ id: d.id, error: message(err) });
    }
  }
  for (const p of job.pages || []) results.pages.push(await renderPage(p));
} finally {
  await browser.close();
}
writeFileSync(job.out, JSON.stringify(results));

function message(err) {
  return String((err && err.message) || err).slice(0, 2000);
}

// Every diagram in one page with the install's Mermaid, as renderMermaid() does it per page:
// mermaid.initialize, then mermaid.render of the text; the SVG or the error for each.
async function renderAll(diagrams) {
  const page = await browser.newPage();
  await page.setViewport({ width: 816, height: 900 });
  await page.setContent('<!doctype html><html><body></body></html>');
  await page.addScriptTag({ path: mermaidJs });
  const out = await page.evaluate(async (diagrams) => {
    window.mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });
    const results = [];
    let n = 0;
    for (const d of diagrams) {
      try {
        const { svg } = await window.mermaid.render(`bulk${n++}`, d.text);
        results.push({ id: d.id, svg });
      } catch (err) {
        results.push({ id: d.id, error: String((err && err.message) || err).slice(0, 2000) });
      }
      document.querySelectorAll('body > div[id^="dbulk"], body > svg').forEach((e) => e.remove());
    }
    return results;
  }, diagrams);
  await page.close();
  return out;
}

// A report page as GitHub shows it: the GFM HTML in a 784 px column, each mermaid block
// rendered by Mermaid in the page; then what a reviewer would see, measured.
async function renderPage(p) {
  const page = await browser.newPage();
  await page.setViewport({ width: 816, height: 900 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.setContent(p.html, { waitUntil: 'load' });
  await page.addScriptTag({ path: mermaidJs });
  const seen = await page.evaluate(async () => {
    const out = { errors: [], diagrams: [] };
    window.mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });
    const blocks = [...document.querySelectorAll('pre[lang="mermaid"], pre > code.language-mermaid')];
    let n = 0;
    for (const block of blocks) {
      const pre = block.tagName === 'PRE' ? block : block.parentElement;
      const text = pre.textContent;
      const holder = document.createElement('div');
      holder.className = 'diagram';
      pre.replaceWith(holder);
      try {
        const { svg } = await window.mermaid.render(`d${n++}`, text);
        holder.innerHTML = svg;
      } catch (err) {
        out.errors.push(String(err && err.message || err));
        continue;
      }
      const svgEl = holder.querySelector('svg');
      const box = svgEl.getBoundingClientRect();
      const kind = svgEl.getAttribute('aria-roledescription') || '';
      const tasks = [...svgEl.querySelectorAll('rect.task')].map((r) => {
        const b = r.getBoundingClientRect();
        return { id: r.id, x: b.x, width: b.width, y: b.y };
      });
      const milestones = [...svgEl.querySelectorAll('.milestone')].map((r) => {
        const b = r.getBoundingClientRect();
        return { id: r.id, x: b.x, width: b.width, y: b.y };
      });
      const labels = [...svgEl.querySelectorAll('text.taskText, text.taskTextOutsideRight, text.taskTextOutsideLeft')]
        .map((t) => ({ id: t.id, text: t.textContent, y: t.getBoundingClientRect().y }));
      const nodeText = [...svgEl.querySelectorAll('.node .nodeLabel, .node text')]
        .map((t) => t.getBoundingClientRect().height).filter((h) => h > 0);
      const viewBox = svgEl.viewBox && svgEl.viewBox.baseVal;
      const scale = viewBox && viewBox.width ? box.width / viewBox.width : 1;
      out.diagrams.push({ kind, width: box.width, height: box.height, scale, tasks, milestones, labels,
        smallestNodeText: nodeText.length ? Math.min(...nodeText) : null,
        errorImage: !!svgEl.querySelector('.error-icon, .error-text') });
    }
    out.text = document.body.innerText;
    return out;
  });
  if (p.png) await page.screenshot({ path: p.png, fullPage: true });
  await page.close();
  return { id: p.id, ...seen, errors: [...errors, ...seen.errors] };
}
