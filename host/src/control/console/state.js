// The console's shared state: what the last poll read, the samples the
// traffic charts are drawn from, and what the operator picked. One object
// that the sections read and the poll, the actions and signing out write.

export const state = {
  selected: null,
  confirmUndeploy: false,
  samples: [],      // [{t, traffic: {component: {requests, errors, buckets}}}]
  metrics: null,    // the last parsed /metrics
  components: [],
  undeployed: [],   // names undeployed, their versions kept
  versions: null,
  letters: [],
  moreLetters: null,
  ready: null,
};
