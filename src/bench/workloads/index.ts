/** Every workload of `vfio-engine bench`, in the order the runner takes them. */
import type { Workload } from '../rig.js';
import { bootMap } from './boot-map.js';
import { bulk } from './bulk.js';
import { churn } from './churn.js';
import { memory } from './memory.js';
import { scale } from './scale.js';
import { secondContainer } from './second-container.js';
import { storm } from './storm.js';

/** The workloads, in run order. */
export const WORKLOADS: readonly Workload[] = [bulk, bootMap, storm, churn, secondContainer, scale, memory];
