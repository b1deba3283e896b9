// ECharts, only the parts the dashboard uses (tree-shaken), drawn as SVG.
import * as echarts from "echarts/core";
import { BarChart, GraphChart, LineChart } from "echarts/charts";
import {
  GridComponent,
  LegendComponent,
  TitleComponent,
  TooltipComponent,
} from "echarts/components";
import { SVGRenderer } from "echarts/renderers";

echarts.use([
  BarChart,
  GraphChart,
  LineChart,
  GridComponent,
  LegendComponent,
  TitleComponent,
  TooltipComponent,
  SVGRenderer,
]);

export { echarts };

/** A chart drawn into `node`, resized with it (ECharts does not follow its container itself). */
export function chartIn(node) {
  const chart = echarts.init(node, null, { renderer: "svg" });
  new ResizeObserver(() => chart.resize()).observe(node);
  return chart;
}
