// The apps the reporting-cost benchmark builds, made from the npm registry's packages only:
//
// - `react-ts`: the app `create-vite` scaffolds with `--template react-ts` (create-vite is a
//   devDependency of the workspace, so this works offline once `npm ci` ran). Its
//   dependencies (react, react-dom, @vitejs/plugin-react, vite) resolve from the
//   workspace's node_modules: the app lives in ingest/.cache/, no second install.
// - `react-ts-large`: the same app plus ROUTES lazily loaded routes of COMPONENTS generated
//   components each (every route its own chunk and stylesheet, one shared module): a
//   larger app, several seconds to build with every bundler.
//
// Each bundler builds an app from src/main.tsx with its usual React + TypeScript setup
// (build-app.mjs).

import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { INGEST_DIR } from '../../test-support/helpers.js';

const CACHE = join(INGEST_DIR, '.cache');
export const ROUTES = 24;
export const COMPONENTS = 40;

/** ingest/.cache/react-ts: `create-vite react-ts --template react-ts`, made once. */
export function reactTsApp() {
  const dir = join(CACHE, 'react-ts');
  if (existsSync(join(dir, 'src', 'main.tsx'))) return dir;
  mkdirSync(CACHE, { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  const bin = join(INGEST_DIR, 'node_modules', 'create-vite', 'index.js');
  const r = spawnSync(process.execPath, [bin, 'react-ts', '--template', 'react-ts', '--no-interactive'], {
    cwd: CACHE,
    encoding: 'utf8',
  });
  if (r.status !== 0 || !existsSync(join(dir, 'src', 'main.tsx'))) {
    throw new Error(`create-vite failed (exit ${r.status}): ${r.stderr || r.stdout}`);
  }
  return dir;
}

const component = (r, c) => `import { useState } from 'react'
import { format, label } from '../shared.ts'

const NOTES = ${JSON.stringify(Array.from({ length: 6 }, (_, i) => `Route ${r}, card ${c}, note ${i}: ${'lorem ipsum dolor sit amet '.repeat(2 + ((r + c + i) % 4))}`))}

export default function Card${r}x${c}({ seed }: { seed: number }) {
  const [n, setN] = useState(seed + ${c})
  const [open, setOpen] = useState(${c % 2 === 0})
  const items = NOTES.slice(0, (n % NOTES.length) + 1).map((t, i) => format(t, n + i))
  return (
    <section className="card r${r} c${c}">
      <h3>{label('Card ${r}.${c}', n)}</h3>
      {open && (
        <ul>
          {items.map((t) => (
            <li key={t}>{t}</li>
          ))}
        </ul>
      )}
      <button type="button" onClick={() => setN(n + ${(c % 5) + 1})}>
        Add ${(c % 5) + 1}
      </button>
      <button type="button" onClick={() => setOpen(!open)}>
        {open ? 'Hide' : 'Show'}
      </button>
    </section>
  )
}
`;

const route = (r) => `import './route.css'
${Array.from({ length: COMPONENTS }, (_, c) => `import Card${r}x${c} from './card${c}.tsx'`).join('\n')}

export default function Route${r}() {
  return (
    <div className="route route-${r}">
${Array.from({ length: COMPONENTS }, (_, c) => `      <Card${r}x${c} seed={${r * COMPONENTS + c}} />`).join('\n')}
    </div>
  )
}
`;

const routeCss = (r) =>
  Array.from(
    { length: COMPONENTS },
    (_, c) => `.route-${r} .c${c} { border: 1px solid hsl(${(r * 37 + c * 11) % 360} 40% 60%); padding: ${c % 8}px; }
.route-${r} .c${c} h3 { color: hsl(${(r * 13 + c * 7) % 360} 60% 30%); }
`,
  ).join('');

const shared = `export function label(text: string, n: number): string {
  return \`\${text} (\${n})\`
}

export function format(text: string, n: number): string {
  return \`\${n.toString(16).padStart(4, '0')}: \${text.trim()}\`
}
`;

const largeAppTsx = `import { Suspense, lazy, useState } from 'react'
import './App.css'
import Starter from './Starter.tsx'

const ROUTES = [
${Array.from({ length: ROUTES }, (_, r) => `  lazy(() => import('./gen/route${r}/index.tsx')),`).join('\n')}
]

export default function App() {
  const [current, setCurrent] = useState(-1)
  const Route = current >= 0 ? ROUTES[current] : null
  return (
    <>
      <nav>
        {ROUTES.map((_, i) => (
          <button key={i} type="button" onClick={() => setCurrent(i)}>
            Route {i}
          </button>
        ))}
      </nav>
      {Route ? (
        <Suspense fallback={<p>Loading…</p>}>
          <Route />
        </Suspense>
      ) : (
        <Starter />
      )}
    </>
  )
}
`;

/**
 * ingest/.cache/react-ts-large: react-ts with ROUTES × COMPONENTS generated components
 * (its App.tsx becomes Starter.tsx, the page shown before a route is picked), made once.
 */
export function largeApp() {
  const dir = join(CACHE, 'react-ts-large');
  const marker = join(dir, `.generated-${ROUTES}x${COMPONENTS}`);
  if (existsSync(marker)) return dir;
  const base = reactTsApp();
  rmSync(dir, { recursive: true, force: true });
  cpSync(base, dir, { recursive: true, filter: (p) => !/[\\/](node_modules|dist)$/.test(p) });
  cpSync(join(base, 'src', 'App.tsx'), join(dir, 'src', 'Starter.tsx'));
  writeFileSync(join(dir, 'src', 'App.tsx'), largeAppTsx);
  mkdirSync(join(dir, 'src', 'gen'), { recursive: true });
  writeFileSync(join(dir, 'src', 'gen', 'shared.ts'), shared);
  for (let r = 0; r < ROUTES; r++) {
    const rd = join(dir, 'src', 'gen', `route${r}`);
    mkdirSync(rd, { recursive: true });
    writeFileSync(join(rd, 'index.tsx'), route(r));
    writeFileSync(join(rd, 'route.css'), routeCss(r));
    for (let c = 0; c < COMPONENTS; c++) writeFileSync(join(rd, `card${c}.tsx`), component(r, c));
  }
  writeFileSync(marker, '');
  return dir;
}

export const APPS = {
  'react-ts': { make: reactTsApp, about: 'create-vite react-ts' },
  'react-ts-large': {
    make: largeApp,
    about: `create-vite react-ts + ${ROUTES} lazy routes × ${COMPONENTS} components (${ROUTES * COMPONENTS + ROUTES + 1} generated modules)`,
  },
};
