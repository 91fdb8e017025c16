/**
 * The reference plugins, one per file under `plugins/<family>/`. Importing this module
 * registers all of them (`plugins(family)` in sdk/plugin.ts lists them afterwards).
 *
 * ```ts
 * import { gd, magnitude, topk } from 'liaison/plugins';
 * ```
 */
export { gd, GD, GDConfig } from './momentum/gd.js';
export { nesterov, Nesterov, NesterovConfig, paperMomentum } from './momentum/nesterov.js';
export { heavyBall, HeavyBall, HeavyBallConfig } from './momentum/heavy-ball.js';
export { adam, Adam, AdamConfig } from './momentum/adam.js';
export { magnitude, Magnitude, MagnitudeConfig } from './pruners/magnitude.js';
export { random, Random, RandomConfig } from './pruners/random.js';
export { imp, Imp, ImpConfig } from './pruners/imp.js';
export { maskedNeurons, MaskedNeurons, MaskedNeuronsConfig } from './pruners/masked-neurons.js';
export { loft, Loft, LoftConfig } from './pruners/loft.js';
export { edgePopup, EdgePopup, EdgePopupConfig, edgePopupMask } from './pruners/edge-popup.js';
export { exact, Exact, ExactConfig } from './deflators/exact.js';
export { hotelling, Hotelling, HotellingConfig } from './deflators/hotelling.js';
export { parallelDeflation, ParallelDeflation, ParallelDeflationConfig } from './deflators/parallel-deflation.js';
export { eigengameMu, EigengameMu, EigengameMuConfig } from './deflators/eigengame-mu.js';
export { capacityMask, topk, TopK, TopKConfig } from './routers/topk.js';
export { expertChoice, ExpertChoice, ExpertChoiceConfig, expertTopTokens } from './routers/expert-choice.js';
export { softMoe, SoftMoe, SoftMoeConfig } from './routers/soft-moe.js';
export { soft, Soft, SoftConfig, softLogits, switchAux, zLoss } from './routers/soft.js';
export { slidingWindow, SlidingWindow, SlidingWindowConfig } from './kv-policies/sliding-window.js';
export { full, Full, FullConfig } from './kv-policies/full.js';
export { streamingLLM, StreamingLLM, StreamingLLMConfig } from './kv-policies/streaming-llm.js';
export { h2o, H2O, H2OConfig } from './kv-policies/h2o.js';
export { scissorhands, Scissorhands, ScissorhandsConfig } from './kv-policies/scissorhands.js';
export { adapad, Adapad, AdapadConfig } from './adapters/adapad.js';
export { lora, Lora, LoraConfig } from './adapters/lora.js';
export { adalora, AdaLora, AdaLoraConfig } from './adapters/adalora.js';
