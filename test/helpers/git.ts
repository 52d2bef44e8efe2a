/** Real git repositories for tests: a bare remote and a work clone that commits and pushes. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export interface TestRepo {
  /** `file://` URL of the bare remote. */
  readonly url: string;
  readonly bare: string;
  readonly work: string;
  /** Writes files (path → text; null deletes), commits them and pushes; returns the commit sha. */
  commit(files: Record<string, string | null>, message: string): string;
  /** Moves the branch back to `sha` and force-pushes. */
  forcePush(sha: string): void;
  remove(): void;
}

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', env: { ...process.env, GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 't@example.org', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 't@example.org' } }).trim();
}

export function createRepo(branch = 'main'): TestRepo {
  const root = mkdtempSync(join(tmpdir(), 'trellis-git-'));
  const bare = join(root, 'remote.git');
  const work = join(root, 'work');
  git(root, 'init', '--bare', '--initial-branch', branch, bare);
  git(root, 'init', '--initial-branch', branch, work);
  git(work, 'remote', 'add', 'origin', bare);
  return {
    url: `file://${bare}`,
    bare,
    work,
    commit(files, message) {
      for (const [path, text] of Object.entries(files)) {
        const full = join(work, path);
        if (text === null) rmSync(full, { force: true });
        else {
          mkdirSync(dirname(full), { recursive: true });
          writeFileSync(full, text);
        }
      }
      git(work, 'add', '-A');
      git(work, 'commit', '-q', '--allow-empty', '-m', message);
      git(work, 'push', '-q', 'origin', `HEAD:${branch}`);
      return git(work, 'rev-parse', 'HEAD');
    },
    forcePush(sha) {
      git(work, 'reset', '-q', '--hard', sha);
      git(work, 'push', '-q', '--force', 'origin', `HEAD:${branch}`);
    },
    remove() {
      rmSync(root, { recursive: true, force: true });
    },
  };
}
