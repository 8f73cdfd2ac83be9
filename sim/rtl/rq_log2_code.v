`timescale 1ns/1ps
// repq-hw reference RTL: post-softmax log-sqrt2 code by threshold comparison (docs/ops/log2_code.md).
//   count = #{k < L : p <= T[k]}  (T non-increasing: a prefix);  code = (count < L) ? count : Z
// L parallel comparators and a population count; one element per clock, registered output.
module rq_log2_code #(
    parameter integer LMAX = 255
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        t_we,
    input  wire [7:0]  t_addr,
    input  wire [31:0] t_data,
    input  wire [8:0]  levels,     // L
    input  wire [7:0]  zstate,     // Z = 2^bits - 1
    input  wire        in_valid,
    input  wire [31:0] p,
    output reg         out_valid,
    output reg  [7:0]  code
);
    reg [32*LMAX-1:0] thr;            // T[k] at bits [32k +: 32]
    always @(posedge clk) if (t_we) thr[t_addr*32 +: 32] <= t_data;
    integer k;
    reg [8:0] count;
    always @* begin
        count = 9'd0;
        for (k = 0; k < LMAX; k = k + 1)
            if (k < levels && p <= thr[k*32 +: 32]) count = count + 9'd1;
    end
    always @(posedge clk) begin
        if (rst) out_valid <= 1'b0;
        else begin
            out_valid <= in_valid;
            code <= (count < levels) ? count[7:0] : zstate;
        end
    end
endmodule
